//! Routing: the [`route_table!`] macro that turns the route table (`routes.rs`) into its types
//! and everything derived from them, and the matching of a request's method and path against
//! the table ([`find`]: a route, or 404 versus 405 with its `Allow` header).
//!
//! A route is one row of the table: its method and pattern, whether it is public, its lane, what
//! its handler does with a body, the handler call, and its OpenAPI description. From the rows
//! come [`Route`] (what a request asks for, with its path values typed), [`Operation`] (the same
//! without values), dispatch, 404/405, the auth exemptions, the handler lanes, the body limits,
//! and the OpenAPI document's paths and operations. Adding a route is its row and its handler
//! function; nothing else lists routes.

use super::routes::{Operation, Route};

/// An HTTP method the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `GET` (and `HEAD`, answered as `GET` without the body).
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `HEAD`.
    Head,
    /// `OPTIONS` (the CORS preflight is answered before routing).
    Options,
}

impl Method {
    /// Every method, in `Allow` order.
    pub(crate) const ALL: [Method; 7] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
    ];

    /// The method named `name` (case-sensitive, as HTTP methods are).
    pub(crate) fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// The method's name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }
}

/// Which thread pool runs a route's handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Handlers that only read memory and Redis.
    Quick,
    /// Handlers that wait on something outside (a test delivery's HTTP attempts), kept apart so
    /// they never hold the threads `/health` and ordinary calls need.
    Slow,
    /// The capture URLs: public (anyone given one can flood it), and a test receiver's capture
    /// rewrites its record in Redis, so they have threads of their own too. Apart from the slow
    /// lane as well: a test delivery waits on the capture of its own request.
    Capture,
}

/// Writes the route table's types and everything that follows from them, from the table in
/// `routes.rs`. The table opens with the names its calls use, `|shared, request, query, body|`
/// (the API state, the whole [`Request`](super::request::Request), its query and its body: named
/// there, not here, so that a call reads only names its own text binds), then has one row per
/// operation:
///
/// ```text
/// /// Summary (the row's doc comment is the OpenAPI summary)
/// Name { values }: METHOD "pattern" [public] [slow | capture] {
///     body: Ignored | Captured | Whole,
///     call: handler(shared, &value, query),
///     openapi: answers("200", ok("…", schema)).query(param).body(schema),
/// }
/// ```
///
/// `{name}` segments of the pattern fill the variant's values in order, and are the OpenAPI
/// path parameters. `ANY` serves every method (capture URLs). `public` needs no token; `slow` and
/// `capture` pick the handler's [`Lane`]. `body` is the [`BodyUse`]; `call` is the handler call
/// (dispatch's arm); `openapi` is an [`openapi::Doc`](super::openapi::Doc): the query parameters,
/// the request body and the responses of the operation's own.
macro_rules! route_table {
    (
        |$shared:ident, $request:ident, $query:ident, $body:ident|
        $(
            $(#[doc = $doc:literal])*
            $name:ident $({ $($value:ident),* })? : $method:ident $pattern:literal $($flag:ident)* {
                body: $body_use:ident,
                call: $call:expr,
                openapi: $openapi:expr $(,)?
            }
        )*
    ) => {
        /// One operation a request asks for, with the values of its path, percent-decoded.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub(crate) enum Route {
            $(
                $(#[doc = $doc])*
                $name $({ $(
                    #[allow(missing_docs)]
                    $value: String
                ),* })?,
            )*
        }

        /// One operation of the API, without values: a row of the route table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Operation {
            $( $(#[doc = $doc])* $name, )*
        }

        impl Operation {
            /// Every operation, in table order (the order of the OpenAPI document).
            pub(crate) const ALL: &'static [Operation] = &[$(Operation::$name),*];

            /// The method served, or `None` for every method.
            pub(crate) fn method(self) -> Option<$crate::api::router::Method> {
                match self { $(Operation::$name => route_table!(@method $method),)* }
            }

            /// The path pattern, as in the OpenAPI document.
            pub(crate) fn pattern(self) -> &'static str {
                match self { $(Operation::$name => $pattern,)* }
            }

            /// Served without the API token.
            pub(crate) fn public(self) -> bool {
                match self { $(Operation::$name => route_table!(@has public $($flag)*),)* }
            }

            /// The pool that runs the handler.
            pub(crate) fn lane(self) -> $crate::api::router::Lane {
                use $crate::api::router::Lane;
                match self {
                    $(Operation::$name => if route_table!(@has slow $($flag)*) {
                        Lane::Slow
                    } else if route_table!(@has capture $($flag)*) {
                        Lane::Capture
                    } else {
                        Lane::Quick
                    },)*
                }
            }

            /// What the handler does with a request body.
            pub(crate) fn body_use(self) -> $crate::api::router::BodyUse {
                match self { $(Operation::$name => $crate::api::router::BodyUse::$body_use,)* }
            }

            /// The OpenAPI summary: the row's doc comment.
            pub(crate) fn summary(self) -> &'static str {
                match self { $(Operation::$name => concat!($($doc),*).trim(),)* }
            }

            /// What the row says of the operation in the OpenAPI document.
            pub(crate) fn openapi(self) -> $crate::api::openapi::Doc {
                match self { $(Operation::$name => $openapi,)* }
            }

            /// The route with these path values (as many as the pattern has, in order).
            pub(super) fn with_values(self, values: Vec<String>) -> Route {
                #[allow(unused_mut, unused_variables)]
                let mut values = values.into_iter();
                match self {
                    $(Operation::$name => Route::$name $({ $(
                        $value: values.next().unwrap_or_default()
                    ),* })?,)*
                }
            }
        }

        impl Route {
            /// The route's row in the table.
            pub(crate) fn operation(&self) -> Operation {
                match self { $(Route::$name { .. } => Operation::$name,)* }
            }
        }

        /// Runs the handler of `route` for `request`: the row's call.
        pub(crate) fn dispatch(
            $shared: &$crate::api::state::Shared,
            route: Route,
            $request: &$crate::api::request::Request,
        ) -> $crate::api::reply::Reply {
            let ($query, $body) = (&$request.query, &$request.body);
            match route {
                $(Route::$name $({ $($value),* })? => $call,)*
            }
        }
    };
    (@method ANY) => { None };
    (@method GET) => { Some($crate::api::router::Method::Get) };
    (@method POST) => { Some($crate::api::router::Method::Post) };
    (@method PUT) => { Some($crate::api::router::Method::Put) };
    (@method DELETE) => { Some($crate::api::router::Method::Delete) };
    (@has public public $($rest:ident)*) => { true };
    (@has slow slow $($rest:ident)*) => { true };
    (@has capture capture $($rest:ident)*) => { true };
    (@has $want:ident $other:ident $($rest:ident)*) => { route_table!(@has $want $($rest)*) };
    (@has $want:ident) => { false };
}

pub(super) use route_table;

/// How much of a request body a route's handler uses; the rest is read and dropped, never held,
/// so that a body sent where it has no use costs no memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyUse {
    /// None (the handler takes no body).
    Ignored,
    /// Its first [`crate::api::captures::BODY_KEPT`] bytes (capture URLs, which need no token).
    Captured,
    /// All of it, up to `WEBHOOK_MAX_BODY_BYTES`.
    Whole,
}

impl Operation {
    /// Whether the operation answers `method` (`HEAD` is answered wherever `GET` is).
    pub(crate) fn serves(self, method: Method) -> bool {
        match self.method() {
            None => true,
            Some(Method::Get) => matches!(method, Method::Get | Method::Head),
            Some(served) => served == method,
        }
    }

    /// The values of `path`'s `{…}` segments if it has this operation's pattern.
    fn values(self, segments: &[&str]) -> Option<Vec<String>> {
        let pattern = self.pattern().trim_end_matches('/').split('/').skip(1);
        if pattern.clone().count() != segments.len() {
            return None;
        }
        let mut values = Vec::new();
        for (p, s) in pattern.zip(segments) {
            if p.starts_with('{') {
                if s.is_empty() {
                    return None;
                }
                values.push(path_value(s)?);
            } else if p != *s {
                return None;
            }
        }
        Some(values)
    }
}

/// Why no route serves a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No pattern matches the path: 404.
    NotFound,
    /// The path exists, not with this method: 405 with these methods in `Allow`.
    MethodNotAllowed(Vec<Method>),
}

/// The route for `method` on `path` (already split from its query). `method` is the request's
/// method as sent; an unknown one is a 405 where the path exists.
pub(crate) fn find(method: &str, path: &str) -> Result<Route, Miss> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = Method::parse(method);
    let mut allowed: Vec<Method> = Vec::new();
    for op in Operation::ALL {
        let Some(values) = op.values(&segments) else {
            continue;
        };
        if method.is_some_and(|m| op.serves(m)) {
            return Ok(op.with_values(values));
        }
        allowed.extend(Method::ALL.into_iter().filter(|m| op.serves(*m)));
    }
    if allowed.is_empty() {
        return Err(Miss::NotFound);
    }
    allowed.sort_by_key(|m| Method::ALL.iter().position(|a| a == m));
    allowed.dedup();
    Err(Miss::MethodNotAllowed(allowed))
}

/// A path segment's value, decoded as Express decodes `req.params` (`decodeURIComponent`: a `+`
/// stays a `+`); `None` (so 404) if it holds a control character, which no id or session name
/// has and which would end up in log lines.
fn path_value(segment: &str) -> Option<String> {
    percent_decode(segment, false).filter(|v| !v.chars().any(char::is_control))
}

/// Decodes `%XX` escapes, and `+` as a space where `plus_is_space` (a query); `None` if the result
/// is not UTF-8 or an escape is broken.
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if bytes[i] == b'+' && plus_is_space {
            out.push(b' ');
            i += 1;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a query string into (name, value) pairs.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, path: &str, expected: Result<Route, Miss>) {
        assert_eq!(find(method, path), expected, "{method} {path}");
    }

    fn id(id: &str) -> String {
        id.to_string()
    }

    #[test]
    fn paths_find_their_routes() {
        check("GET", "/", Ok(Route::Root));
        check("GET", "/dashboard", Ok(Route::Dashboard));
        check("GET", "/health", Ok(Route::Health));
        check("HEAD", "/health", Ok(Route::Health));
        check("GET", "/webhooks", Ok(Route::ListWebhooks));
        check("GET", "/webhooks/", Ok(Route::ListWebhooks));
        check("POST", "/webhooks", Ok(Route::CreateWebhook));
        check(
            "GET",
            "/webhooks/wh_1_a",
            Ok(Route::GetWebhook { id: id("wh_1_a") }),
        );
        check(
            "DELETE",
            "/webhooks/wh_1_a",
            Ok(Route::DeleteWebhook { id: id("wh_1_a") }),
        );
        check(
            "GET",
            "/webhooks/wh%201/stats",
            Ok(Route::WebhookStats { id: id("wh 1") }),
        );
        check(
            "POST",
            "/webhooks/a/secret/rotate",
            Ok(Route::RotateSecret { id: id("a") }),
        );
        check(
            "PATCH",
            "/webhook-monitor/session_1",
            Ok(Route::CaptureForSession {
                session_id: id("session_1"),
            }),
        );
        check("GET", "/webhooks//stats", Err(Miss::NotFound));
        check("GET", "/nope", Err(Miss::NotFound));
        check("GET", "/webhooks/a/b/c/d", Err(Miss::NotFound));
        check("GET", "/webhooks/%zz", Err(Miss::NotFound));
        check("GET", "/webhooks/%+a", Err(Miss::NotFound));
        check("DELETE", "/webhooks/x%0Ay", Err(Miss::NotFound));
        check(
            "POST",
            "/webhook-monitor/a+b",
            Ok(Route::CaptureForSession {
                session_id: id("a+b"),
            }),
        );
    }

    #[test]
    fn a_known_path_with_another_method_lists_the_allowed_ones() {
        use Method::*;
        check(
            "PATCH",
            "/webhooks",
            Err(Miss::MethodNotAllowed(vec![Get, Head, Post])),
        );
        check(
            "POST",
            "/webhooks/x",
            Err(Miss::MethodNotAllowed(vec![Get, Head, Put, Delete])),
        );
        check(
            "DELETE",
            "/stats/summary",
            Err(Miss::MethodNotAllowed(vec![Get, Head])),
        );
        check(
            "TRACE",
            "/webhook-monitor/s",
            Err(Miss::MethodNotAllowed(Method::ALL.to_vec())),
        );
    }

    #[test]
    fn the_table_is_consistent() {
        for op in Operation::ALL {
            let segments: Vec<&str> = op.pattern().split('/').skip(1).collect();
            let values = op.values(&segments).unwrap_or_default();
            let route = op.with_values(values.clone());
            assert_eq!(route.operation(), *op, "{}", op.pattern());
            assert_eq!(values.len(), op.pattern().matches('{').count());
        }
        assert!(Operation::Health.public() && !Operation::ListWebhooks.public());
        assert_eq!(Operation::TestWebhook.lane(), Lane::Slow);
        assert_eq!(Operation::Health.lane(), Lane::Quick);
        assert_eq!(Operation::CaptureForReceiver.lane(), Lane::Capture);
        assert_eq!(Operation::CaptureForSession.lane(), Lane::Capture);
        assert_eq!(Operation::SessionRequests.lane(), Lane::Quick);
        assert_eq!(Operation::CreateWebhook.body_use(), BodyUse::Whole);
        assert_eq!(Operation::CaptureForSession.body_use(), BodyUse::Captured);
        assert_eq!(Operation::GetWebhook.body_use(), BodyUse::Ignored);
        assert_eq!(Operation::GetWebhook.summary(), "Get a webhook");
    }

    #[test]
    fn queries_parse() {
        assert_eq!(
            query_pairs("limit=5&since=a%20b&flag"),
            vec![
                ("limit".to_string(), "5".to_string()),
                ("since".to_string(), "a b".to_string()),
                ("flag".to_string(), String::new())
            ]
        );
    }
}
