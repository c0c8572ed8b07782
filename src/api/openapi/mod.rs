//! `GET /openapi.json`: the OpenAPI 3 description of every operation of the route table
//! (`api/routes.rs`). Each row gives its operation's method, path, summary (its doc comment),
//! auth (`public`) and its own [`Doc`] (query parameters, request body, responses); this module
//! adds the path parameters (from the pattern), the responses every route may give, and the
//! shapes in `components.schemas` ([`schemas`]).

use serde_json::{Map, Value, json};

use super::router::Method;
use super::routes::Operation;

mod doc;
mod schemas;

pub(crate) use doc::{
    Doc, answers, component, data_envelope, error_response, limit_param, ok, query_param, text,
};

/// Responses every route may give besides its own, in order; 401 only where a token is needed.
fn common(public: bool) -> Vec<(&'static str, Value)> {
    let mut common = vec![
        ("404", error_response("Unknown route or resource")),
        ("405", error_response("Method not allowed")),
        ("413", error_response("Request body too large")),
        ("400", error_response("Invalid request")),
        ("500", error_response("Internal error")),
        ("503", error_response("Redis unreachable")),
    ];
    if !public {
        common.push(("401", error_response("Missing or wrong bearer token")));
    }
    common
}

/// The responses of `op`: its own, then the common ones, where one of its own with the same code
/// takes the common one's place.
fn responses(own: Vec<(&'static str, Value)>, public: bool) -> Map<String, Value> {
    let common = common(public);
    let mut all = Map::new();
    let (replacing, own): (Vec<_>, Vec<_>) = own
        .into_iter()
        .partition(|(code, _)| common.iter().any(|(c, _)| c == code));
    for (code, response) in own {
        all.insert(code.to_string(), response);
    }
    for (code, response) in common {
        let response = replacing
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(response, |(_, own)| own.clone());
        all.insert(code.to_string(), response);
    }
    all
}

/// The names of `pattern`'s `{name}` segments, in order.
fn path_names(pattern: &str) -> impl Iterator<Item = &str> {
    pattern
        .split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// The OpenAPI operation of `op` served with `method`.
fn operation(op: Operation, method: Method) -> Value {
    let Doc {
        query,
        body,
        responses: own,
    } = op.openapi();
    let (pattern, public) = (op.pattern(), op.public());
    let mut params: Vec<Value> = path_names(pattern).map(doc::path_param).collect();
    params.extend(query);
    let mut item = Map::new();
    item.insert("summary".into(), Value::from(op.summary()));
    item.insert(
        "operationId".into(),
        Value::from(format!(
            "{}{}",
            method.as_str().to_lowercase(),
            pattern.replace(['/', '{', '}', '.', '-'], "_")
        )),
    );
    if !params.is_empty() {
        item.insert("parameters".into(), Value::from(params));
    }
    if let Some((required, schema)) = body {
        item.insert(
            "requestBody".into(),
            json!({"required": required, "content": {"application/json": {"schema": schema}}}),
        );
    }
    item.insert("responses".into(), Value::Object(responses(own, public)));
    if public {
        item.insert("security".into(), json!([]));
    }
    Value::Object(item)
}

/// The methods the document describes for `op`: a capture URL serves every method, of which
/// HEAD (answered as GET is) and OPTIONS (the CORS preflight) are left out.
pub(crate) fn described_methods(op: Operation) -> Vec<Method> {
    match op.method() {
        Some(method) => vec![method],
        None => vec![
            Method::Get,
            Method::Post,
            Method::Put,
            Method::Patch,
            Method::Delete,
        ],
    }
}

/// The document as served, built and written once: it never changes while the process runs, and
/// `/openapi.json` needs no token, so a request for it must cost no more than a copy (building
/// and writing the 50 KiB tree each time took a handler thread tens of milliseconds, and 16
/// clients asking for it again and again slowed `/health` past 200 ms).
pub(crate) fn served() -> &'static [u8] {
    static SERVED: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    // JavaScript's number formatting, as every JSON response of the API.
    SERVED.get_or_init(|| crate::json::to_vec(&document()))
}

/// The document: its `paths` are the route table's patterns and methods.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for op in Operation::ALL {
        let item = paths
            .entry(op.pattern().to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(item) = item {
            for method in described_methods(*op) {
                item.insert(method.as_str().to_lowercase(), operation(*op, method));
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "webhook-service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Management and monitoring API of webhook-service, compatible with the EMP Job Queue webhook service.",
        },
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas::schemas(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::BodyUse;

    #[test]
    fn an_operation_documents_a_body_where_its_handler_reads_one() {
        for op in Operation::ALL {
            let reads = op.body_use() != BodyUse::Ignored;
            let documented = op.openapi().body.is_some();
            assert_eq!(documented, reads, "{}", op.pattern());
        }
    }

    #[test]
    fn an_own_response_takes_the_place_of_the_common_one() {
        let own = vec![("200", json!("own 200")), ("503", json!("own 503"))];
        let all = responses(own, true);
        let codes: Vec<&str> = all.keys().map(String::as_str).collect();
        assert_eq!(codes, ["200", "404", "405", "413", "400", "500", "503"]);
        assert_eq!(all["503"], json!("own 503"));
        assert!(responses(vec![], false).contains_key("401"));
    }

    #[test]
    fn path_parameters_are_the_patterns_names() {
        let names: Vec<&str> = path_names("/webhook-monitor/{sessionId}/requests").collect();
        assert_eq!(names, ["sessionId"]);
        assert_eq!(path_names("/webhooks/{id}/secret/rotate").count(), 1);
        assert_eq!(path_names("/health").count(), 0);
    }

    #[test]
    fn every_operation_is_described_with_its_path_values() {
        let doc = document();
        let mut described = 0;
        for op in Operation::ALL {
            for method in described_methods(*op) {
                assert!(
                    op.serves(method),
                    "{method:?} {} is described but not served",
                    op.pattern()
                );
                let item = &doc["paths"][op.pattern()][method.as_str().to_lowercase()];
                assert!(
                    item.is_object(),
                    "{method:?} {} is not in the document",
                    op.pattern()
                );
                assert!(item["summary"].as_str().is_some_and(|s| !s.is_empty()));
                assert!(item["responses"].as_object().is_some_and(|r| !r.is_empty()));
                let params = item["parameters"].as_array().cloned().unwrap_or_default();
                let declared = op.pattern().matches('{').count();
                let path_params = params.iter().filter(|p| p["in"] == "path").count();
                assert_eq!(path_params, declared, "{method:?} {}", op.pattern());
                assert_eq!(item["security"] == serde_json::json!([]), op.public());
                described += 1;
            }
        }
        let in_doc: usize = doc["paths"]
            .as_object()
            .map(|p| {
                p.values()
                    .filter_map(Value::as_object)
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        assert_eq!(
            in_doc, described,
            "the document describes an operation that is not served"
        );
    }
}
