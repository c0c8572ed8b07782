//! Responses: the original's envelopes (`{success: true, data, …}` and
//! `{success: false, error, message?}`), always JSON.

use serde_json::{Map, Value, json};

/// A response before CORS and transport headers are added.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// HTTP status.
    pub(crate) status: u16,
    /// JSON body (`Value::Null` for an empty body, e.g. 204).
    pub(crate) body: Value,
    /// Extra headers.
    pub(crate) headers: Vec<(&'static str, String)>,
    /// A body that is not JSON, with its content type (boxed: rare, and large).
    pub(crate) raw: Option<Box<(&'static str, Vec<u8>)>>,
}

impl Reply {
    /// `{success: true, data}` with `status`.
    pub(crate) fn data(status: u16, data: Value) -> Reply {
        Reply::envelope(status, json!({"success": true, "data": data}))
    }

    /// `{success: true, data, <extra>…}`.
    pub(crate) fn data_with(status: u16, data: Value, extra: &[(&str, Value)]) -> Reply {
        let mut body = Map::new();
        body.insert("success".into(), Value::Bool(true));
        body.insert("data".into(), data);
        for (k, v) in extra {
            body.insert((*k).to_string(), v.clone());
        }
        Reply::envelope(status, Value::Object(body))
    }

    /// `{success: true, message}`.
    pub(crate) fn message(message: impl Into<String>) -> Reply {
        Reply::envelope(200, json!({"success": true, "message": message.into()}))
    }

    /// Any body.
    pub(crate) fn envelope(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body,
            headers: Vec::new(),
            raw: None,
        }
    }

    /// A non-JSON body (the Prometheus exposition, the dashboard page).
    pub(crate) fn raw(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            body: Value::Null,
            headers: Vec::new(),
            raw: Some(Box::new((content_type, body))),
        }
    }

    /// `{success: false, error}`.
    pub(crate) fn error(status: u16, error: impl Into<String>) -> Reply {
        Reply::envelope(status, json!({"success": false, "error": error.into()}))
    }

    /// `{success: false, error, message}`.
    pub(crate) fn error_message(
        status: u16,
        error: impl Into<String>,
        message: impl Into<String>,
    ) -> Reply {
        Reply::envelope(
            status,
            json!({"success": false, "error": error.into(), "message": message.into()}),
        )
    }

    /// 404 for an unknown webhook (the original's text).
    pub(crate) fn webhook_not_found() -> Reply {
        Reply::error(404, "Webhook not found")
    }

    /// 500 for a failure inside the service; the detail goes to the log, not the client.
    pub(crate) fn internal(what: &str) -> Reply {
        Reply::error_message(500, "Internal server error", what.to_string())
    }

    /// 503 when Redis cannot be reached.
    pub(crate) fn unavailable() -> Reply {
        Reply::error_message(
            503,
            "Service unavailable",
            "Redis is not reachable; try again shortly",
        )
    }

    /// Adds a header.
    pub(crate) fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}
