//! Micro-benchmarks of the per-event hot path: parsing a source message, matching against 1, 100
//! and 10,000 webhooks, building a body, and signing it with both schemes.
//!
//! Run: `cargo bench --bench hot_path`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use webhook_service::delivery::dispatcher::envelope;
use webhook_service::delivery::signer::Signer;
use webhook_service::event::parse::parse;
use webhook_service::event::{canonical, legacy};
use webhook_service::webhook::matching::{HALF_OPEN_AFTER_MS, Snapshot};
use webhook_service::webhook::model::{EventNames, Webhook};

const COMPLETE_JOB: &[u8] = br#"{"job_id":"job-1","worker_id":"worker-1","progress":100,"status":"completed","message":"done","result":{"ok":true,"images":["a.png","b.png"],"seconds":12.5},"timestamp":1759579300000,"workflow_id":"wf-1","current_step":1,"total_steps":3,"workflow_priority":50,"workflow_datetime":1759579100000}"#;

fn snapshot(n: usize) -> Snapshot {
    let events = [["complete_job"], ["job.*"], ["job.failed"], ["*"]];
    let webhooks = (0..n)
        .map(|i| {
            let body = json!({"url": format!("https://example.com/{i}"), "events": events[i % 4], "filters": {"worker_ids": ["worker-1", "worker-2"]}});
            Arc::new(Webhook::from_json(&format!("wh_{i}_abc"), &body, EventNames::Strict).unwrap())
        })
        .collect();
    Snapshot::new(webhooks, HALF_OPEN_AFTER_MS)
}

fn benches(c: &mut Criterion) {
    c.bench_function("parse complete_job", |b| {
        b.iter(|| parse(black_box("complete_job"), black_box(COMPLETE_JOB), 1))
    });
    let event = parse("complete_job", COMPLETE_JOB, 1)
        .unwrap()
        .events
        .remove(0);
    for n in [1, 100, 10_000] {
        let snap = snapshot(n);
        c.bench_function(&format!("match against {n} webhooks"), |b| {
            b.iter(|| snap.matches(black_box(&event), 1).count())
        });
    }
    c.bench_function("build legacy body", |b| {
        b.iter(|| {
            let data = legacy::data(black_box(&event)).to_vec();
            envelope(
                "complete_job",
                "wh_1759579300000_abcdefghi",
                &event.timestamp,
                "wh_1_abc",
                &data,
            )
        })
    });
    c.bench_function("build canonical body", |b| {
        b.iter(|| {
            let data = canonical::data(black_box(&event)).to_vec();
            envelope(
                "job.completed",
                "wh_1759579300000_abcdefghi",
                &event.timestamp,
                "wh_1_abc",
                &data,
            )
        })
    });
    let data = legacy::data(&event).to_vec();
    let body = envelope(
        "complete_job",
        "wh_1759579300000_abcdefghi",
        &event.timestamp,
        "wh_1_abc",
        &data,
    );
    let signer = Signer::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    c.bench_function("sign legacy (sha256 hex)", |b| {
        b.iter(|| signer.legacy(black_box(&body)))
    });
    c.bench_function("sign standard webhooks (v1)", |b| {
        b.iter(|| {
            signer.standard(
                black_box("wh_1759579300000_abcdefghi"),
                1_700_000_000,
                black_box(&body),
            )
        })
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
