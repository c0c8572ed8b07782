//! Route handlers: one function per operation, each taking the API state and the typed parts of
//! the request it uses (a path value, the query, the body). [`dispatch`] is the one place that
//! maps a [`Route`] to its handler; it is exhaustive, so a route without a handler does not
//! compile.

pub(crate) mod dead_letters;
pub(crate) mod health;
pub(crate) mod receivers;
pub(crate) mod sessions;
pub(crate) mod stats;
pub(crate) mod test_delivery;
pub(crate) mod webhooks;

use super::reply::Reply;
use super::request::{Query, Request};
use super::router::Route;
use super::state::Shared;

/// Runs the handler of `route` for `request`.
pub(crate) fn dispatch(shared: &Shared, route: Route, request: &Request) -> Reply {
    let (query, body) = (&request.query, &request.body);
    match route {
        Route::Root | Route::Dashboard => dashboard(),
        Route::Health => health::health(shared),
        Route::OpenApi => Reply::raw(
            200,
            "application/json; charset=utf-8",
            super::openapi::served().to_vec(),
        ),
        Route::ListWebhooks => webhooks::list(shared),
        Route::CreateWebhook => webhooks::create(shared, body),
        Route::GetWebhook { id } => webhooks::get(shared, &id),
        Route::UpdateWebhook { id } => webhooks::update(shared, &id, body),
        Route::DeleteWebhook { id } => webhooks::delete(shared, &id),
        Route::TestWebhook { id } => test_delivery::test(shared, &id),
        Route::ReconnectWebhook { id } => webhooks::reconnect(shared, &id),
        Route::WebhookStats { id } => stats::webhook_stats(shared, &id),
        Route::WebhookDeliveries { id } => stats::webhook_deliveries(shared, &id, query),
        Route::WebhookSecret { id } => webhooks::secret(shared, &id),
        Route::RotateSecret { id } => webhooks::rotate(shared, &id, query, body),
        Route::RecoverWebhook { id } => dead_letters::recover(shared, &id, query),
        Route::DeadLetters => dead_letters::list(shared, query),
        Route::RedeliverDeadLetter { id } => dead_letters::redeliver(shared, &id),
        Route::Metrics => health::metrics(shared),
        Route::StatsSummary => stats::summary(shared),
        Route::RecentDeliveries => stats::recent(shared, query),
        Route::ListReceivers => receivers::list(shared),
        Route::CreateReceiver => receivers::create(shared),
        Route::ReceiverRequests { id } => receivers::requests(shared, &id, query),
        Route::ClearReceiver { id } => receivers::clear(shared, &id),
        Route::CaptureForReceiver { id } => receivers::capture(shared, &id, request),
        Route::CaptureForSession { session_id } => sessions::capture(shared, &session_id, request),
        Route::SessionRequests { session_id } => sessions::requests(shared, &session_id, query),
        Route::ClearSession { session_id } => sessions::clear(shared, &session_id),
    }
}

/// The dashboard: one page, embedded in the binary, no external assets. It holds no data of its
/// own; it calls the API from the browser with the token the user enters.
fn dashboard() -> Reply {
    Reply::raw(
        200,
        "text/html; charset=utf-8",
        include_bytes!("../dashboard.html").to_vec(),
    )
    .with_header(
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    )
    .with_header("X-Content-Type-Options", "nosniff")
    .with_header("Cache-Control", "no-store")
}

/// Parses `?limit=`: absent → `default`; not a positive whole number → 400; above `max` → `max`.
pub(crate) fn limit(query: &Query, default: usize, max: usize) -> Result<usize, Reply> {
    match query.get("limit") {
        None | Some("") => Ok(default),
        // Any positive whole number, however long, means at most `max`.
        Some(text)
            if text.bytes().all(|b| b.is_ascii_digit()) && text.bytes().any(|b| b != b'0') =>
        {
            Ok(text.parse::<usize>().map_or(max, |n| n.min(max)))
        }
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(Reply::error_message(
                400,
                "limit must be a positive whole number",
                format!("got {text:?}"),
            )),
        },
    }
}

/// Captured requests as a JSON array, newest first, each written as it was kept.
pub(crate) fn json_array<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}
