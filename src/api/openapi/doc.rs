//! What a row of the route table writes of its operation in the OpenAPI document ([`Doc`]), and
//! the small builders the rows write it with: responses, envelopes, schema references and query
//! parameters. The rest of an operation comes from the row's other columns (see
//! [`super::operation`]).

use serde_json::{Value, json};

/// An operation's own part of its OpenAPI description: its query parameters, its request body
/// and the responses of its own. The summary is the row's doc comment, the path parameters come
/// from its pattern, and the responses every route may give are added by the document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Doc {
    /// Query parameters, in order (after the path parameters).
    pub(super) query: Vec<Value>,
    /// The request body: whether it is required, and its JSON Schema.
    pub(super) body: Option<(bool, Value)>,
    /// Responses by status code, in order. One with a code every route may give replaces that
    /// common response.
    pub(super) responses: Vec<(&'static str, Value)>,
}

/// An operation that answers `code` with `response` (and what the builder's methods add).
pub(crate) fn answers(code: &'static str, response: Value) -> Doc {
    Doc {
        query: Vec::new(),
        body: None,
        responses: vec![(code, response)],
    }
}

impl Doc {
    /// Also answers `code` with `response`.
    pub(crate) fn answers(mut self, code: &'static str, response: Value) -> Doc {
        self.responses.push((code, response));
        self
    }

    /// Takes the query parameter `param` (see [`query_param`] and [`limit_param`]).
    pub(crate) fn query(mut self, param: Value) -> Doc {
        self.query.push(param);
        self
    }

    /// Takes an optional JSON body of `schema`.
    pub(crate) fn body(mut self, schema: Value) -> Doc {
        self.body = Some((false, schema));
        self
    }

    /// Needs a JSON body of `schema`.
    pub(crate) fn required_body(mut self, schema: Value) -> Doc {
        self.body = Some((true, schema));
        self
    }
}

/// A JSON response of `schema`.
pub(crate) fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// A response of `media_type` text.
pub(crate) fn text(description: &str, media_type: &str) -> Value {
    json!({"description": description, "content": {media_type: {"schema": {"type": "string"}}}})
}

/// An error response (the `Error` envelope).
pub(crate) fn error_response(description: &str) -> Value {
    ok(description, component("Error"))
}

/// `{"success": true, "data": …}` with `data` of schema `data`.
pub(crate) fn data_envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["success", "data"],
        "properties": {"success": {"type": "boolean"}, "data": data},
    })
}

/// A reference to the schema `name` of the document's `components.schemas`.
pub(crate) fn component(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A query parameter `name` of `schema`.
pub(crate) fn query_param(name: &str, required: bool, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": schema})
}

/// `?limit=`, as [`crate::api::handlers::limit`] reads it.
pub(crate) fn limit_param(max: u64) -> Value {
    json!({
        "name": "limit",
        "in": "query",
        "required": false,
        "description": format!("How many, newest first; values above {max} mean {max}."),
        "schema": {"type": "integer", "minimum": 1},
    })
}

/// The path parameter `name` (a `{name}` segment of a pattern).
pub(super) fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}})
}
