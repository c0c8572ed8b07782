//! A request as handlers see it: read whole by the connection's thread before any handler runs,
//! so no handler ever waits on a client's bytes. Handlers take the parts they use ([`Query`],
//! [`Body`], a path value); only capture URLs take the whole [`Request`].

use serde_json::Value;

use super::reply::Reply;

/// One complete request.
#[derive(Debug)]
pub(crate) struct Request {
    /// The method as sent (upper-case for every method the API serves).
    pub(crate) method: String,
    /// The path, without the query.
    pub(crate) path: String,
    /// Query parameters, in order.
    pub(crate) query: Query,
    /// Every header as sent, in order, names lowercased.
    pub(crate) headers: Vec<(String, String)>,
    /// The body, or as much of it as the route uses (empty when none; see
    /// [`super::router::BodyUse`]).
    pub(crate) body: Body,
    /// The length of the whole body as received.
    pub(crate) body_len: usize,
    /// The client's IP address as this server sees the connection (a header the client sends
    /// cannot change it).
    pub(crate) client_ip: String,
}

/// The first header `name` (lowercase) of `headers`.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Query parameters.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Query(pub(crate) Vec<(String, String)>);

impl Query {
    /// The first parameter `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A request body.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Body(pub(crate) Vec<u8>);

impl Body {
    /// The body as JSON: `Null` when empty, 400 when malformed.
    pub(crate) fn json(&self) -> Result<Value, Reply> {
        if self.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.0)
            .map_err(|e| Reply::error_message(400, "Invalid JSON", format!("request body: {e}")))
    }

    /// Whether the body is empty (or only white space).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.iter().all(u8::is_ascii_whitespace)
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}
