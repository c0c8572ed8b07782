//! Intake: source messages from Redis become events, deduplicated, and are dispatched.
//!
//! [`pubsub`] owns the subscriber connection; [`Intake::process`] is what every source (pub/sub
//! now, a stream later) calls per message. A message that does not parse is counted per source
//! and logged once per (source, kind of problem), and never stops the next one. A progress update
//! published after its job's terminal event is stale: it is skipped, so no receiver sees a
//! finished job move back to "in progress" (issue #11).

pub(crate) mod dedupe;
pub(crate) mod jobs;
pub(crate) mod pubsub;
pub(crate) mod share;
pub(crate) mod stage;
pub(crate) mod stream;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, warn};
use parking_lot::Mutex;

use crate::delivery::dispatcher::Dispatcher;
use crate::event::parse::{Parsed, StatusHint, parse};
use crate::event::{Event, EventKind, identity_hash};
use crate::monitor::{Counters, bump};

use dedupe::Dedupe;
use jobs::JobTracker;

/// The per-message pipeline shared by every intake thread.
pub(crate) struct Intake {
    dispatcher: Arc<Dispatcher>,
    counters: Arc<Counters>,
    state: Mutex<State>,
    /// Where pub/sub events go to be recorded in batches (see [`stage`]); `None`: inline.
    stage: Option<stage::StageSender>,
}

struct State {
    dedupe: Dedupe,
    jobs: JobTracker,
    /// (source, problem) pairs already logged.
    reported: HashSet<(String, &'static str)>,
}

impl Intake {
    /// A pipeline dispatching through `dispatcher`.
    pub(crate) fn new(
        dispatcher: Arc<Dispatcher>,
        counters: Arc<Counters>,
        dedupe_window: Duration,
        stage: Option<stage::StageSender>,
    ) -> Intake {
        Intake {
            dispatcher,
            stage,
            counters,
            state: Mutex::new(State {
                dedupe: Dedupe::new(dedupe_window),
                jobs: JobTracker::default(),
                reported: HashSet::new(),
            }),
        }
    }

    /// Handles one message from `channel`; `source` names the subscription it came through (the
    /// channel, or the pattern for pattern subscriptions). Returns true when nothing of it can be
    /// lost any more: its deliveries are recorded in Redis, or it has none (a stream entry may be
    /// acknowledged then).
    pub(crate) fn process(
        &self,
        source: &str,
        channel: &str,
        payload: &[u8],
        replayable: bool,
    ) -> bool {
        bump(&self.counters.events_received);
        let now_ms = crate::time::now_ms();
        let parsed = match parse(channel, payload, now_ms) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.counters.malformed(source);
                let first = self
                    .state
                    .lock()
                    .reported
                    .insert((source.to_string(), e.kind()));
                if first {
                    warn!(
                        "skipping a message on {channel}: {e} (further {} messages on {source} are counted, not logged)",
                        e.kind()
                    );
                } else {
                    debug!("skipping a message on {channel}: {e}");
                }
                return true;
            }
        };
        let events = self.prepare(parsed);
        let mut deliveries = 0;
        let mut recorded = true;
        for event in events {
            self.counters.event(event.kind.name(), source);
            if let (false, Some(stage)) = (replayable, &self.stage) {
                // Pub/sub: another instance's event waits for its owner in the record stage,
                // unbuilt (it is built there only if the owner does not claim it in time).
                if !stage.owns(&event) {
                    if self.matches_any(&event) {
                        // Counted as processed here, like the events this instance builds.
                        deliveries += 1;
                        stage.defer(event);
                    }
                    continue;
                }
                // Ours: built here, recorded and queued by the record stage, in batches.
                if let Some(prepared) = self.dispatcher.prepare(&event) {
                    deliveries += prepared.len();
                    stage.send(event, prepared);
                }
                continue;
            }
            let dispatched = self.dispatcher.dispatch(&event, replayable);
            deliveries += dispatched.count;
            recorded &= dispatched.recorded;
            if replayable && !dispatched.recorded {
                // Left pending, it is read again: then it is no duplicate.
                self.state.lock().dedupe.forget(&event.identity);
            }
        }
        if deliveries > 0 {
            bump(&self.counters.events_processed);
        } else {
            bump(&self.counters.events_skipped);
        }
        recorded
    }

    /// Whether any webhook takes `event` (matching only, no bodies built).
    fn matches_any(&self, event: &Event) -> bool {
        let snapshot = self.dispatcher.registry.snapshot();
        let now_ms = crate::time::now_ms();
        snapshot.matches(event, now_ms).next().is_some()
    }

    /// Counts a stream entry without `channel` and `message`.
    pub(crate) fn malformed_entry(&self, source: &str, id: &str) {
        bump(&self.counters.events_received);
        self.counters.malformed(source);
        let first = self
            .state
            .lock()
            .reported
            .insert((source.to_string(), "missing_field"));
        if first {
            warn!(
                "skipping stream entry {id} on {source}: it lacks `channel` or `message` (further ones are counted, not logged)"
            );
        }
    }

    /// Adds what the job tracker knows, derives `job.status_changed`, drops duplicates and
    /// progress updates of finished jobs.
    fn prepare(&self, parsed: Parsed) -> Vec<Event> {
        let Parsed { mut events, status } = parsed;
        let now = Instant::now();
        let mut state = self.state.lock();
        let finished = |e: &Event| {
            e.kind == EventKind::JobProgress
                && e.job_id().is_some_and(|job| state.jobs.finished(&job))
        };
        if let Some(stale) = events.iter().find(|e| finished(e)) {
            debug!(
                "progress of job {} after its terminal event is skipped",
                stale.job_id().unwrap_or_default()
            );
            return Vec::new();
        }
        for event in events.iter_mut().filter(|e| e.kind.is_job()) {
            if let Some(job_id) = event.job_id() {
                let (job_type, priority) = state.jobs.known(&job_id);
                event.known_job_type = job_type;
                event.known_priority = priority;
            }
        }
        if let Some(hint) = status
            && let Some(changed) = status_changed(&mut state.jobs, hint)
        {
            events.push(changed);
        }
        let before = events.len();
        events.retain(|e| state.dedupe.first_time(&e.identity, now));
        drop(state);
        for _ in events.len()..before {
            bump(&self.counters.events_duplicate);
        }
        events
    }
}

/// The `job.status_changed` a lifecycle step implies, if the status changed.
fn status_changed(jobs: &mut JobTracker, hint: StatusHint) -> Option<Event> {
    let StatusHint {
        job_id,
        new_status,
        worker_id,
        job_type,
        priority,
        source,
    } = hint;
    let old = jobs.transition(&job_id, new_status, job_type, priority)?;
    let (known_job_type, known_priority) = jobs.known(&job_id);
    let mut fields = serde_json::Map::new();
    fields.insert("job_id".into(), serde_json::Value::from(job_id));
    if let Some(worker) = worker_id {
        fields.insert("worker_id".into(), worker);
    }
    Some(Event {
        kind: EventKind::JobStatusChanged,
        identity: identity_hash(&[
            b"job.status_changed",
            &source.identity,
            new_status.as_bytes(),
        ]),
        fields,
        new_status: Some(new_status.to_string()),
        old_status: old.map(str::to_string),
        known_job_type,
        known_priority,
        ..source
    })
}
