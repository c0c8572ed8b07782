//! Micro-benchmarks of the per-event hot path: parsing a source message, matching against 1, 100
//! and 10,000 webhooks, building a body, signing it with both schemes, and what each delivery
//! costs in the gate and its job's line (one thread, no contention).
//!
//! Run: `cargo bench --bench hot_path`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use webhook_service::delivery::Delivery;
use webhook_service::delivery::dispatcher::envelope;
use webhook_service::delivery::gate::{Admission, EndpointGate, GateConfig, Next, Outcome};
use webhook_service::delivery::lines::{Entered, Lines, Place};
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

/// One delivery through a job's line and the gate, as a delivery thread sees it: enter the line,
/// be admitted on a first-attempt seat, end the attempt, leave the line.
fn delivery_bookkeeping(c: &mut Criterion) {
    let gate = EndpointGate::new(GateConfig {
        first: 8,
        retry: 2,
        slow: 16,
        max_per_endpoint: 4,
        slow_after: std::time::Duration::from_millis(250),
        max_parked: 10_000,
        attempt_timeout: std::time::Duration::from_secs(30),
    });
    let lines = Lines::new(5000);
    let Some(Next::Read(seat)) = gate.take_seat(std::time::Duration::ZERO) else {
        panic!("no seat");
    };
    let quick = Some(Outcome {
        took: std::time::Duration::from_millis(1),
        unreachable: false,
    });
    let webhook: Arc<str> = Arc::from("wh_1700000000000_abcdefghi");
    let body: Arc<[u8]> = Arc::from(COMPLETE_JOB.to_vec());
    let delivery = |n: u64| Delivery {
        webhook_id: webhook.clone(),
        event_id: String::new(),
        event_type: Arc::from("complete_job"),
        kind: webhook_service::event::EventKind::JobCompleted,
        body: body.clone(),
        attempts: 0,
        created_ms: 0,
        job: Some(Arc::from(format!("job-{n}"))),
        sequence: Some(n),
    };
    // The endpoint is known to answer quickly (its probe ran on a slow seat).
    let Admission::Run(probe, _) = gate.admit(delivery(0), seat, Default::default()) else {
        panic!("no probe");
    };
    let _ = gate.release(probe, quick, None);
    let Some(Next::Read(seat)) = gate.take_seat(std::time::Duration::ZERO) else {
        panic!("no seat");
    };
    let mut n = 0u64;
    c.bench_function("a delivery through its line and the gate", |b| {
        b.iter(|| {
            n += 1;
            let delivery = delivery(n);
            let Entered::Go(delivery) = lines.enter(delivery) else {
                panic!("held");
            };
            let place = Place::of(&delivery);
            let Admission::Run(ticket, delivery) = gate.admit(delivery, seat, Default::default())
            else {
                panic!("not admitted");
            };
            let next = place.and_then(|p| lines.leave(p));
            assert!(next.is_none());
            black_box(delivery);
            match gate.release(ticket, quick, None) {
                Next::Read(_) => {}
                other => panic!("{other:?}"),
            }
        })
    });
}

criterion_group!(hot_path, benches, delivery_bookkeeping);
criterion_main!(hot_path);
