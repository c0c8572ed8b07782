//! JSON text exactly as JavaScript's `JSON.stringify` writes it (a leaf: it knows no other module;
//! event bodies, stored records and API replies are all written with it).
//!
//! Receivers of the original service verify the legacy signature by re-serialising the body they
//! parsed with `JSON.stringify` (reference section 5.2), so our bytes must be the bytes JavaScript
//! would produce: compact, keys in insertion order, and numbers printed by `Number.prototype.toString`
//! (`1` rather than `1.0`, `1e+21` rather than `1000000000000000000000`).
//!
//! This module owns number and document formatting only; string escaping is delegated to
//! `serde_json`, whose rules (escape `"`, `\` and control characters, lowercase `\u00xx`) are the
//! same as JavaScript's for every string Rust can hold.

use std::borrow::Cow;

use serde_json::{Map, Number, Value};

/// Largest integer a JavaScript number holds exactly (2^53).
const MAX_SAFE: u64 = 1 << 53;

/// Serialises `value` as `JSON.stringify(value)` would.
pub(crate) fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// Serialises an object as `JSON.stringify(object)` would.
pub(crate) fn object_to_vec(map: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_object(&mut out, map);
    out
}

/// Appends the JavaScript serialisation of `value` to `out`.
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

/// Appends the JavaScript serialisation of an object to `out`.
pub(crate) fn write_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    write_entries(out, map.iter().map(|(key, value)| (key.as_str(), value)));
}

fn write_entries<'v>(out: &mut Vec<u8>, entries: impl Iterator<Item = (&'v str, &'v Value)>) {
    out.push(b'{');
    for (i, (key, value)) in entries.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write_value(out, value);
    }
    out.push(b'}');
}

/// Writes one JSON object field by field, straight into bytes: for documents this service builds
/// itself on a hot path, where building a `serde_json::Map` first would cost more than the text.
///
/// ```
/// # use webhook_service::json::ObjectWriter;
/// let mut w = ObjectWriter::new(64);
/// w.str("id", "a\"b").u64("n", 7).bool("ok", true).f64("ms", Some(1.5)).raw("body", b"{}");
/// assert_eq!(w.finish(), br#"{"id":"a\"b","n":7,"ok":true,"ms":1.5,"body":{}}"#);
/// ```
#[derive(Debug)]
pub struct ObjectWriter {
    out: Vec<u8>,
}

impl ObjectWriter {
    /// An empty object with room for `capacity` bytes.
    pub fn new(capacity: usize) -> ObjectWriter {
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        ObjectWriter { out }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if self.out.len() > 1 {
            self.out.push(b',');
        }
        write_str(&mut self.out, key);
        self.out.push(b':');
        &mut self.out
    }

    /// A string field.
    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        write_str(self.key(key), value);
        self
    }

    /// A string field, or `null`.
    pub(crate) fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.str(key, value),
            None => self.raw(key, b"null"),
        }
    }

    /// An integer field (written as JavaScript would write the number).
    pub fn u64(&mut self, key: &str, value: u64) -> &mut Self {
        write_number(self.key(key), &Number::from(value));
        self
    }

    /// A number field, or `null`.
    pub fn f64(&mut self, key: &str, value: Option<f64>) -> &mut Self {
        match value {
            Some(value) => write_f64(self.key(key), value),
            None => self.key(key).extend_from_slice(b"null"),
        }
        self
    }

    /// A boolean field.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.raw(key, text)
    }

    /// A field whose value is JSON text already (copied as it is).
    pub fn raw(&mut self, key: &str, json: &[u8]) -> &mut Self {
        self.key(key).extend_from_slice(json);
        self
    }

    /// The finished object.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out
    }
}

/// A JSON object being built for a body: keys in the order first inserted, values borrowed from
/// the event where they are copied from it (a large `result` is written, never deep-copied),
/// and a key inserted again keeps its place and takes the new value, as `Map::insert` does.
#[derive(Debug, Default)]
pub struct Object<'a> {
    entries: Vec<(Cow<'a, str>, Cow<'a, Value>)>,
}

impl<'a> Object<'a> {
    /// Sets `key` (in place if it is there already).
    pub(crate) fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Cow<'a, Value>) {
        let key = key.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Appends `key`, which the caller knows is not among the entries yet.
    pub(crate) fn push_new(&mut self, key: impl Into<Cow<'a, str>>, value: Cow<'a, Value>) {
        self.entries.push((key.into(), value));
    }

    /// Whether `key` is among the first `n` entries.
    pub(crate) fn first_contain(&self, n: usize, key: &str) -> bool {
        self.entries.iter().take(n).any(|(k, _)| k == key)
    }

    /// Whether `key` is set.
    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.first_contain(self.entries.len(), key)
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The object's text, as `JSON.stringify` writes it.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        write_entries(
            &mut out,
            self.entries.iter().map(|(key, value)| (&**key, &**value)),
        );
        out
    }
}

/// Appends a JSON string literal.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail, and serde_json's string escaping has no other error path.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

fn write_number(out: &mut Vec<u8>, n: &Number) {
    if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE {
            out.extend_from_slice(u.to_string().as_bytes());
        } else {
            write_f64(out, u as f64);
        }
    } else if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= MAX_SAFE {
            out.extend_from_slice(i.to_string().as_bytes());
        } else {
            write_f64(out, i as f64);
        }
    } else if let Some(f) = n.as_f64() {
        write_f64(out, f);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Formats a double the way `Number.prototype.toString()` does (ECMA-262 `Number::toString`).
///
/// ```
/// # use webhook_service::json::format_f64;
/// assert_eq!(format_f64(1.0), "1");
/// assert_eq!(format_f64(0.1), "0.1");
/// assert_eq!(format_f64(1e21), "1e+21");
/// assert_eq!(format_f64(1.5e-7), "1.5e-7");
/// ```
pub fn format_f64(f: f64) -> String {
    let mut out = Vec::new();
    write_f64(&mut out, f);
    String::from_utf8(out).unwrap_or_default()
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() {
        // JSON.stringify writes NaN and the infinities as null.
        out.extend_from_slice(b"null");
        return;
    }
    if f == 0.0 {
        // Covers -0 as well, which JavaScript prints as "0".
        out.push(b'0');
        return;
    }
    if f < 0.0 {
        out.push(b'-');
    }
    // Rust's `{:e}` prints the shortest digits that round-trip, as ECMA-262 requires:
    // "d[.ddd]e[-]x".
    let sci = format!("{:e}", f.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exponent + 1;
    let digits = digits.as_bytes();
    if k <= n && n <= 21 {
        out.extend_from_slice(digits);
        out.extend(std::iter::repeat_n(b'0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.extend_from_slice(&digits[..n as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-n) as usize));
        out.extend_from_slice(digits);
    } else {
        out.push(digits[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if n > 0 { b'+' } else { b'-' });
        out.extend_from_slice((n - 1).abs().to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let value: Value = serde_json::from_str(input).unwrap_or(Value::Null);
        let actual = String::from_utf8(to_vec(&value)).unwrap_or_default();
        assert_eq!(actual, expected, "input: {input}");
    }

    #[test]
    fn numbers_print_like_javascript() {
        check("1.0", "1");
        check("-0.0", "0");
        check("100.50", "100.5");
        check("1e21", "1e+21");
        check("1e20", "100000000000000000000");
        check("123456789012345678901234", "1.2345678901234569e+23");
        check("0.000001", "0.000001");
        check("0.0000001", "1e-7");
        check("1.5e-7", "1.5e-7");
        check("9007199254740993", "9007199254740992");
        check("-9007199254740993", "-9007199254740992");
        check("1700000000000", "1700000000000");
        check("0.1", "0.1");
        check("2.5e300", "2.5e+300");
        check("-1.25", "-1.25");
    }

    #[test]
    fn documents_are_compact_and_keep_key_order() {
        check(
            r#"{ "b": 1, "a": [1.0, "x", null, true, {"z": {}}], "c": "é\n\u0001\"" }"#,
            r#"{"b":1,"a":[1,"x",null,true,{"z":{}}],"c":"é\n\u0001\""}"#,
        );
        // A repeated key keeps its first position and its last value, as JSON.parse does.
        check(r#"{"a":1,"b":2,"a":3}"#, r#"{"a":3,"b":2}"#);
        check("\"\\u2028/\"", "\"\u{2028}/\"");
    }
}
