//! The route table: every path the API serves, with its methods. One table drives dispatch,
//! 404-versus-405, the auth exemptions and the OpenAPI document's test.

/// Every HTTP method a capture URL accepts.
const ANY: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// A route: a path pattern (`{name}` matches one segment) and its methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDef {
    /// The pattern, as in the OpenAPI document.
    pub pattern: &'static str,
    /// Methods served.
    pub methods: &'static [&'static str],
    /// Served without the API token (health checks, webhook capture URLs).
    pub public: bool,
}

/// Every route.
pub const ROUTES: &[RouteDef] = &[
    RouteDef {
        pattern: "/",
        methods: &["GET"],
        public: true,
    },
    RouteDef {
        pattern: "/dashboard",
        methods: &["GET"],
        public: true,
    },
    RouteDef {
        pattern: "/health",
        methods: &["GET"],
        public: true,
    },
    RouteDef {
        pattern: "/openapi.json",
        methods: &["GET"],
        public: true,
    },
    RouteDef {
        pattern: "/webhooks",
        methods: &["GET", "POST"],
        public: false,
    },
    RouteDef {
        pattern: "/webhooks/{id}",
        methods: &["GET", "PUT", "DELETE"],
        public: false,
    },
    RouteDef {
        pattern: "/webhooks/{id}/test",
        methods: &["POST"],
        public: false,
    },
    RouteDef {
        pattern: "/webhooks/{id}/reconnect",
        methods: &["POST"],
        public: false,
    },
    RouteDef {
        pattern: "/webhooks/{id}/stats",
        methods: &["GET"],
        public: false,
    },
    RouteDef {
        pattern: "/webhooks/{id}/deliveries",
        methods: &["GET"],
        public: false,
    },
    RouteDef {
        pattern: "/webhooks/{id}/secret",
        methods: &["GET"],
        public: false,
    },
    RouteDef {
        pattern: "/webhooks/{id}/secret/rotate",
        methods: &["POST"],
        public: false,
    },
    RouteDef {
        pattern: "/webhooks/{id}/recover",
        methods: &["POST"],
        public: false,
    },
    RouteDef {
        pattern: "/dead-letters",
        methods: &["GET"],
        public: false,
    },
    RouteDef {
        pattern: "/dead-letters/{id}/redeliver",
        methods: &["POST"],
        public: false,
    },
    RouteDef {
        pattern: "/metrics",
        methods: &["GET"],
        public: false,
    },
    RouteDef {
        pattern: "/stats/summary",
        methods: &["GET"],
        public: false,
    },
    RouteDef {
        pattern: "/deliveries/recent",
        methods: &["GET"],
        public: false,
    },
    RouteDef {
        pattern: "/test-receivers",
        methods: &["GET", "POST"],
        public: false,
    },
    RouteDef {
        pattern: "/test-receivers/{id}/requests",
        methods: &["GET", "DELETE"],
        public: false,
    },
    RouteDef {
        pattern: "/test-receivers/{id}/webhook",
        methods: ANY,
        public: true,
    },
    RouteDef {
        pattern: "/webhook-monitor/{sessionId}",
        methods: ANY,
        public: true,
    },
    RouteDef {
        pattern: "/webhook-monitor/{sessionId}/requests",
        methods: &["GET", "DELETE"],
        public: false,
    },
];

/// A matched route and the values of its `{…}` segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    /// The route.
    pub route: &'static RouteDef,
    /// Segment values, in order.
    pub params: Vec<String>,
}

/// Finds the route for `path` (already split from its query).
pub fn find(path: &str) -> Option<Matched> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    ROUTES.iter().find_map(|route| {
        let pattern: Vec<&str> = route
            .pattern
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .collect();
        if pattern.len() != segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (p, s) in pattern.iter().zip(&segments) {
            if p.starts_with('{') {
                if s.is_empty() {
                    return None;
                }
                params.push(percent_decode(s)?);
            } else if p != s {
                return None;
            }
        }
        Some(Matched { route, params })
    })
}

/// Decodes `%XX` escapes; `None` if the result is not UTF-8 or an escape is broken.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if bytes[i] == b'+' {
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
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: Option<(&str, &[&str])>) {
        let got = find(path).map(|m| (m.route.pattern, m.params));
        let expected = expected
            .map(|(p, params)| (p, params.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
        assert_eq!(got, expected, "{path}");
    }

    #[test]
    fn paths_find_their_routes() {
        check("/", Some(("/", &[])));
        check("/dashboard", Some(("/dashboard", &[])));
        check("/health", Some(("/health", &[])));
        check("/webhooks", Some(("/webhooks", &[])));
        check("/webhooks/", Some(("/webhooks", &[])));
        check("/webhooks/wh_1_a", Some(("/webhooks/{id}", &["wh_1_a"])));
        check(
            "/webhooks/wh%201/stats",
            Some(("/webhooks/{id}/stats", &["wh 1"])),
        );
        check(
            "/webhooks/a/secret/rotate",
            Some(("/webhooks/{id}/secret/rotate", &["a"])),
        );
        check(
            "/webhook-monitor/session_1",
            Some(("/webhook-monitor/{sessionId}", &["session_1"])),
        );
        check("/webhooks//stats", None);
        check("/nope", None);
        check("/webhooks/a/b/c/d", None);
        check("/webhooks/%zz", None);
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
