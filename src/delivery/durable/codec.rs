//! The stored form of a delivery and the Lua scripts that move records between the places a
//! delivery can be (leased, due, dead). No I/O: the store in `mod.rs` runs them.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::super::Delivery;
use crate::event::EventKind;
use crate::json::ObjectWriter;

/// The Lua function `spread(stash, field, deliveries, due)`: moves one event's deliveries
/// recorded for the due set ([`RECORD`]) from `stash`'s `field` into the deliveries hash and the
/// due set, each closed with the event's sequence (the field is `<claim key>:<sequence>`);
/// returns how many. The field's value is one line per delivery: `id TAB due TAB
/// record-without-its-closing-brace`.
/// Records are JSON written by this service: no raw tab or newline in them. And
/// `spread_all(stash, deliveries, due)`: every field of `stash`. A value not in that
/// form is moved, whole, to `<stash>:unreadable` and said in Redis' log: kept, never dropped,
/// and it holds nothing else up (spreading, releasing leases, a record's retry).
macro_rules! spread_fn {
    () => {
        r#"
local function spread(stash, field, deliveries, dueset)
  local v = redis.call('HGET', stash, field)
  if not v then return 0 end
  local function unreadable()
    redis.call('HSET', stash .. ':unreadable', field, v)
    redis.call('HDEL', stash, field)
    redis.log(redis.LOG_WARNING, 'webhook-service: unreadable deliveries for the due set in ' .. stash .. ' ' .. field .. ' moved to ' .. stash .. ':unreadable')
    return 0
  end
  local seq = string.match(field, ':(%d+)$')
  if not seq then return unreadable() end
  local tail = ',"sequence":' .. seq .. '}'
  local f, z, pos = {}, {}, 1
  while pos <= #v do
    local t1 = string.find(v, '\t', pos, true)
    local t2 = t1 and string.find(v, '\t', t1 + 1, true)
    if not t2 then return unreadable() end
    local e = string.find(v, '\n', t2 + 1, true) or (#v + 1)
    local id = string.sub(v, pos, t1 - 1)
    f[#f + 1] = id
    f[#f + 1] = string.sub(v, t2 + 1, e - 1) .. tail
    z[#z + 1] = string.sub(v, t1 + 1, t2 - 1)
    z[#z + 1] = id
    pos = e + 1
  end
  redis.call('HDEL', stash, field)
  for i = 1, #f, 2000 do
    redis.call('HSET', deliveries, unpack(f, i, math.min(i + 1999, #f)))
    redis.call('ZADD', dueset, unpack(z, i, math.min(i + 1999, #z)))
  end
  return #f / 2
end
local function spread_all(stash, deliveries, dueset)
  local n = 0
  for _, field in ipairs(redis.call('HKEYS', stash)) do
    n = n + spread(stash, field, deliveries, dueset)
  end
  return n
end
"#
    };
}

/// Claims and records a batch of events. KEYS: the deliveries hash, this instance's lease set, the
/// sequence counter, the due set, this instance's deferring hash, then one claim key per event.
/// ARGV: this instance's id, then per event: the claim's TTL in ms ('0': no claim), the number
/// of deliveries n, then n (id, record without its closing `}`, due) triples, where due is '0'
/// for a delivery leased here (it is queued now) or the time in ms it is due (its endpoint is
/// backed up: it goes into the due set, and its record is '' here), then the deliveries for the
/// due set in the form `spread` reads ('' for none).
///
/// Those deliveries are written as one value, the event's field (`<claim key>:<sequence>`) of
/// the deferring hash, and spread into the due set by a later script ([`SPREAD`]; after a crash,
/// by [`RELEASE_ALL`]). So the event's other deliveries are queued after one cheap write, not
/// after a hash field and a sorted-set member per backed-up endpoint (64 of them cost the
/// healthy webhook's delivery 0.6 ms), and nothing is in Redis for a moment only.
///
/// Returns, per event, `{sequence}` if it was claimed and recorded now, `{0}` if another
/// instance had claimed it, and `{sequence, state...}` if this instance had claimed and recorded
/// it already: a try whose answer was lost with the connection (Redis went away just after running
/// the script). Then nothing is written again (what it left deferring is spread first); each
/// state says where that delivery is now (0: leased here, 1: in the due set, 2: neither, taken or
/// finished meanwhile), so the caller queues exactly what is still its own to queue. The claim's
/// value is `<instance>:<sequence>`.
///
/// The batch takes one sequence number per event, in order, with one INCRBY: every instance
/// handles events in source order and claims them in one script, so an event claimed later has a
/// higher number, whichever instance claims it. The number closes each record (one concatenation
/// per record), so every attempt and redelivery sends the same one. Fields and ids are written in
/// chunks, many per command (Lua's `unpack` takes at most a few thousand values).
pub(super) const RECORD: &str = concat!(
    spread_fn!(),
    r#"
local claimed, fields, ids = {}, {}, {}
local function flush()
  if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
  if #ids > 0 then redis.call('SADD', KEYS[2], unpack(ids)) end
  fields, ids = {}, {}
end
local instance = ARGV[1]
local seq = redis.call('INCRBY', KEYS[3], #KEYS - 5) - (#KEYS - 5)
local a = 2
for k = 6, #KEYS do
  local ttl, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  seq = seq + 1
  if ttl == '0' or redis.call('SET', KEYS[k], instance .. ':' .. seq, 'NX', 'PX', ttl) then
    local tail = string.format(',"sequence":%d}', seq)
    for _ = 1, n do
      if ARGV[a + 2] == '0' then
        fields[#fields + 1] = ARGV[a]
        fields[#fields + 1] = ARGV[a + 1] .. tail
        ids[#ids + 1] = ARGV[a]
      end
      a = a + 3
      if #fields >= 2000 then flush() end
    end
    if ARGV[a] ~= '' then
      redis.call('HSET', KEYS[5], KEYS[k] .. ':' .. seq, ARGV[a])
    end
    a = a + 1
    claimed[#claimed + 1] = {seq}
  else
    local owner, was = string.match(redis.call('GET', KEYS[k]) or '', '^(.*):(%d+)$')
    if owner == instance then
      spread(KEYS[5], KEYS[k] .. ':' .. was, KEYS[1], KEYS[4])
      local found = {tonumber(was)}
      for _ = 1, n do
        local state = 2
        if redis.call('SISMEMBER', KEYS[2], ARGV[a]) == 1 then
          state = 0
        elseif redis.call('ZSCORE', KEYS[4], ARGV[a]) then
          state = 1
        end
        found[#found + 1] = state
        a = a + 3
      end
      a = a + 1
      claimed[#claimed + 1] = found
    else
      a = a + 3 * n + 1
      claimed[#claimed + 1] = {0}
    end
  end
end
flush()
return claimed
"#
);

/// Spreads every event's deliveries an instance recorded for the due set ([`RECORD`]) into it.
/// KEYS: the instance's deferring hash, the deliveries hash, the due set. Returns how many
/// deliveries.
pub(super) const SPREAD: &str = concat!(
    spread_fn!(),
    r#"
return spread_all(KEYS[1], KEYS[2], KEYS[3])
"#
);

/// Leases up to ARGV[2] deliveries due by ARGV[1]. KEYS: the due set, the deliveries hash, this
/// instance's lease set. Returns (id, record) pairs; an id without a record is dropped from the
/// due set (it was delivered or dropped meanwhile).
pub(super) const TAKE_DUE: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local record = redis.call('HGET', KEYS[2], id)
  if record then
    redis.call('SADD', KEYS[3], id)
    table.insert(out, id)
    table.insert(out, record)
  end
end
return out
"#;

/// Moves an instance's leases back to due at ARGV[1], after spreading what it recorded for the
/// due set ([`SPREAD`]). KEYS: its lease set, the due set, its deferring hash, the deliveries
/// hash. Returns how many deliveries it held in all.
pub(super) const RELEASE_ALL: &str = concat!(
    spread_fn!(),
    r#"
local moved = spread_all(KEYS[3], KEYS[4], KEYS[2])
while true do
  local ids = redis.call('SPOP', KEYS[1], 1000)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    redis.call('ZADD', KEYS[2], ARGV[1], id)
  end
  moved = moved + #ids
end
return moved
"#
);

pub(super) const REDELIVER: &str = r#"
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
return 1
"#;

/// A delivery record as a JSON map (the dead letter adds its failure to it).
pub(super) fn record_map(d: &Delivery) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("webhook_id".into(), Value::from(&*d.webhook_id));
    m.insert("event_id".into(), Value::from(d.event_id.as_str()));
    m.insert("event_type".into(), Value::from(&*d.event_type));
    m.insert("kind".into(), Value::from(d.kind.name()));
    m.insert("attempts".into(), Value::from(d.attempts));
    m.insert("created_ms".into(), Value::from(d.created_ms));
    if let Some(job) = &d.job {
        m.insert("job_id".into(), Value::from(&**job));
    }
    m.insert(
        "body".into(),
        Value::from(String::from_utf8_lossy(&d.body).into_owned()),
    );
    if let Some(sequence) = d.sequence {
        m.insert("sequence".into(), Value::from(sequence));
    }
    m
}

/// The stored form of a delivery: the fields of `record_map`, written straight to text (this runs
/// once per delivery on the intake path). It ends with `}`, and with the sequence last when there
/// is one: the record script appends the sequence to records that have none yet.
pub(crate) fn encode(d: &Delivery) -> Vec<u8> {
    // Bodies are JSON this service wrote, so valid UTF-8 and borrowed here, not copied.
    let body = String::from_utf8_lossy(&d.body);
    let mut w = ObjectWriter::new(224 + body.len() + body.len() / 4);
    w.str("webhook_id", &d.webhook_id)
        .str("event_id", &d.event_id)
        .str("event_type", &d.event_type)
        .str("kind", d.kind.name())
        .u64("attempts", u64::from(d.attempts))
        .u64("created_ms", d.created_ms);
    if let Some(job) = &d.job {
        w.str("job_id", job);
    }
    w.str("body", &body);
    if let Some(sequence) = d.sequence {
        w.u64("sequence", sequence);
    }
    w.finish()
}

/// A delivery from its stored form (`None` if it is not one).
pub(crate) fn decode(text: &str) -> Option<Delivery> {
    let v: Value = serde_json::from_str(text).ok()?;
    Some(Delivery {
        webhook_id: Arc::from(v["webhook_id"].as_str()?),
        event_id: v["event_id"].as_str()?.to_string(),
        event_type: Arc::from(v["event_type"].as_str()?),
        kind: EventKind::from_name(v["kind"].as_str()?).unwrap_or(EventKind::JobCompleted),
        body: Arc::from(v["body"].as_str()?.as_bytes()),
        attempts: v["attempts"].as_u64().unwrap_or(0) as u32,
        created_ms: v["created_ms"].as_u64().unwrap_or(0),
        job: v["job_id"].as_str().map(Arc::from),
        sequence: v["sequence"].as_u64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(job: Option<&str>, sequence: Option<u64>) -> Delivery {
        Delivery {
            webhook_id: Arc::from("wh_1_a"),
            event_id: "wh_2_abcdefghi".into(),
            event_type: Arc::from("complete_job"),
            kind: EventKind::JobCompleted,
            body: Arc::from(br#"{"a":"\u00e9\n"}"#.to_vec()),
            attempts: 3,
            created_ms: 7,
            job: job.map(Arc::from),
            sequence,
        }
    }

    #[test]
    fn records_round_trip() {
        for d in [
            delivery(None, None),
            delivery(Some("job-1"), None),
            delivery(Some("job-1"), Some(42)),
        ] {
            // The same text the record's map serialises to (what earlier versions stored).
            assert_eq!(
                encode(&d),
                Value::Object(record_map(&d)).to_string().into_bytes()
            );
            let back = decode(&String::from_utf8(encode(&d)).unwrap_or_default());
            let fields = |b: Delivery| {
                (
                    b.webhook_id,
                    b.event_id,
                    b.event_type,
                    b.kind,
                    b.body,
                    b.attempts,
                    b.created_ms,
                    b.job,
                    b.sequence,
                )
            };
            assert_eq!(back.map(fields), Some(fields(d)));
        }
    }

    #[test]
    fn the_record_script_appends_the_sequence_as_encode_writes_it() {
        // What RECORD does to a record without a sequence and its closing brace: append.
        let without = String::from_utf8(encode(&delivery(Some("j"), None))).unwrap_or_default();
        let appended = format!("{},\"sequence\":42}}", &without[..without.len() - 1]);
        let with = String::from_utf8(encode(&delivery(Some("j"), Some(42)))).unwrap_or_default();
        assert_eq!(appended, with);
    }
}
