//! Tests of per-job lines: order, the due set, the memory bounds.

use super::*;
use crate::event::EventKind;

fn d(job: &str, sequence: u64) -> Delivery {
    Delivery {
        webhook_id: Arc::from("wh"),
        event_id: format!("e{sequence}"),
        event_type: Arc::from("job.progress"),
        kind: EventKind::JobProgress,
        body: Arc::from(Vec::new()),
        attempts: 0,
        created_ms: 0,
        job: Some(Arc::from(job)),
        sequence: Some(sequence),
    }
}

/// Ends the first attempt of `job`'s event `sequence`; what comes next, as text.
fn leave(lines: &Lines, job: &str, sequence: u64) -> Option<String> {
    let place = Place::of(&d(job, sequence))?;
    lines.leave(place).map(turn)
}

fn turn(turn: Turn) -> String {
    match turn {
        Turn::Go(d) => d.event_id,
        Turn::Fetch(id, _) => format!("fetch {id}"),
    }
}

fn id(entered: Entered) -> String {
    match entered {
        Entered::Go(d) => d.event_id,
        other => panic!("expected Go, got {other:?}"),
    }
}

#[test]
fn one_job_goes_one_at_a_time_in_order_and_jobs_do_not_wait_for_each_other() {
    let lines = Lines::new(100);
    assert_eq!(id(lines.enter(d("a", 1))), "e1");
    // Behind the head, out of order: they go in sequence order.
    assert!(matches!(lines.enter(d("a", 5)), Entered::Held));
    assert!(matches!(lines.enter(d("a", 3)), Entered::Held));
    // Another job is not held up.
    assert_eq!(id(lines.enter(d("b", 2))), "e2");
    assert_eq!(lines.waiting(), 2);
    assert_eq!(leave(&lines, "a", 1).as_deref(), Some("e3"));
    assert_eq!(leave(&lines, "a", 3).as_deref(), Some("e5"));
    assert!(leave(&lines, "a", 5).is_none());
    assert_eq!(lines.waiting(), 0);
    // The line is gone: the job's next event goes at once.
    assert_eq!(id(lines.enter(d("a", 9))), "e9");
}

#[test]
fn deliveries_without_a_job_or_a_sequence_are_not_held() {
    let lines = Lines::new(100);
    let mut no_job = d("a", 1);
    no_job.job = None;
    assert!(matches!(lines.enter(no_job.clone()), Entered::Go(_)));
    assert!(matches!(lines.enter(no_job), Entered::Go(_)));
    let mut unrecorded = d("a", 1);
    unrecorded.sequence = None;
    assert!(matches!(lines.enter(unrecorded.clone()), Entered::Go(_)));
    assert!(matches!(lines.enter(unrecorded), Entered::Go(_)));
}

#[test]
fn a_head_in_the_due_set_holds_its_line_until_it_is_back_or_its_grace_ends() {
    let lines = Lines::new(100);
    assert_eq!(id(lines.enter(d("a", 1))), "e1");
    lines.away(&d("a", 1), Duration::from_millis(10));
    assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
    // Back from Redis: it goes on, still the head.
    assert_eq!(id(lines.enter(d("a", 1))), "e1");
    assert!(
        lines
            .expire(Instant::now() + Duration::from_secs(60))
            .is_empty()
    );
    // Away again, and never back: after the grace period the next one goes on.
    lines.away(&d("a", 1), Duration::ZERO);
    assert!(lines.expire(Instant::now()).is_empty());
    let later = Instant::now() + AWAY_GRACE + Duration::from_millis(1);
    let go: Vec<String> = lines.expire(later).into_iter().map(turn).collect();
    assert_eq!(go, ["e2"]);
    // The late head is no longer the head: its end does not move the line.
    assert!(leave(&lines, "a", 1).is_none());
    assert!(leave(&lines, "a", 2).is_none());
    assert_eq!(lines.waiting(), 0);
}

#[test]
fn past_the_memory_bound_deliveries_are_kept_as_ids_and_read_back_in_turn() {
    let lines = Lines::new(1);
    assert_eq!(id(lines.enter(d("a", 1))), "e1");
    assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
    assert!(matches!(lines.enter(d("a", 3)), Entered::Kept));
    assert!(matches!(lines.enter(d("a", 4)), Entered::Kept));
    assert_eq!(lines.waiting(), 1);
    assert_eq!(leave(&lines, "a", 1).as_deref(), Some("e2"));
    // e3's turn: it is read back; nothing else goes until it is here.
    let Some(Turn::Fetch(fetch, place)) = Place::of(&d("a", 2)).and_then(|p| lines.leave(p)) else {
        panic!("e3 is not fetched");
    };
    assert_eq!(fetch, "e3");
    // Redis cannot be read: asked again a second later, not before.
    lines.fetch_failed(place);
    assert!(lines.expire(Instant::now()).is_empty());
    let again: Vec<String> = lines
        .expire(Instant::now() + FETCH_RETRY)
        .into_iter()
        .map(turn)
        .collect();
    assert_eq!(again, ["fetch e3"]);
    // Read back: it goes on, then e4 is read back in turn.
    assert_eq!(id(lines.enter(d("a", 3))), "e3");
    assert_eq!(leave(&lines, "a", 3).as_deref(), Some("fetch e4"));
    assert_eq!(id(lines.enter(d("a", 4))), "e4");
    assert!(leave(&lines, "a", 4).is_none());
    assert_eq!(lines.waiting(), 0);
}

#[test]
fn past_the_bound_on_ids_deliveries_go_on_out_of_order() {
    let lines = Lines::new(1);
    assert_eq!(id(lines.enter(d("a", 1))), "e1");
    assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
    for n in 0..KEPT_PER_WAITING as u64 {
        assert!(matches!(lines.enter(d("a", 3 + n)), Entered::Kept));
    }
    let last = 3 + KEPT_PER_WAITING as u64;
    assert_eq!(id(lines.enter(d("a", last))), format!("e{last}"));
}

#[test]
fn past_the_bound_a_head_in_the_due_set_with_nothing_behind_is_forgotten() {
    let lines = Lines::new(1);
    for job in 0..=KEPT_PER_WAITING {
        assert!(matches!(
            lines.enter(d(&job.to_string(), 1)),
            Entered::Go(_)
        ));
    }
    // More lines than the bound: one whose head goes to the due set is let go...
    lines.away(&d("0", 1), Duration::ZERO);
    assert!(matches!(lines.enter(d("0", 2)), Entered::Go(_)));
    // ...but not one with something behind it.
    assert!(matches!(lines.enter(d("1", 2)), Entered::Held));
    lines.away(&d("1", 1), Duration::ZERO);
    assert!(matches!(lines.enter(d("1", 3)), Entered::Kept));
    assert_eq!(leave(&lines, "1", 1).as_deref(), Some("e2"));
}

#[test]
fn a_delivery_recorded_straight_into_the_due_set_keeps_its_place_in_its_line() {
    let lines = Lines::new(100);
    // The first of its job, due later: it is the head, away.
    lines.enter_away(&d("a", 1), Duration::from_millis(10));
    assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
    // Another one due later, behind it: it holds nothing in memory.
    lines.enter_away(&d("a", 3), Duration::from_millis(10));
    assert!(matches!(lines.enter(d("a", 4)), Entered::Held));
    assert_eq!(lines.waiting(), 2);
    // The head comes back and goes; then e2.
    assert_eq!(id(lines.enter(d("a", 1))), "e1");
    assert_eq!(leave(&lines, "a", 1).as_deref(), Some("e2"));
    // e3's turn: it is still in the due set, so nothing goes until it is back...
    assert!(leave(&lines, "a", 2).is_none());
    assert!(lines.expire(Instant::now()).is_empty());
    // ...and back, it goes on, then e4.
    assert_eq!(id(lines.enter(d("a", 3))), "e3");
    assert_eq!(leave(&lines, "a", 3).as_deref(), Some("e4"));
    assert!(leave(&lines, "a", 4).is_none());
    assert_eq!(lines.waiting(), 0);

    // Back before its turn: it waits in memory like any other.
    assert_eq!(id(lines.enter(d("b", 1))), "e1");
    lines.enter_away(&d("b", 2), Duration::from_millis(10));
    assert!(matches!(lines.enter(d("b", 2)), Entered::Held));
    assert_eq!(leave(&lines, "b", 1).as_deref(), Some("e2"));
    assert!(leave(&lines, "b", 2).is_none());

    // Never back (another instance took it, or a crash lost it): once it is the head, the
    // line goes on after its grace.
    assert_eq!(id(lines.enter(d("c", 1))), "e1");
    lines.enter_away(&d("c", 2), Duration::ZERO);
    assert!(matches!(lines.enter(d("c", 3)), Entered::Held));
    assert!(leave(&lines, "c", 1).is_none());
    let later = Instant::now() + AWAY_GRACE + Duration::from_millis(1);
    let go: Vec<String> = lines.expire(later).into_iter().map(turn).collect();
    assert_eq!(go, ["e3"]);
    assert!(leave(&lines, "c", 3).is_none());
    assert_eq!(lines.waiting(), 0);
}

#[test]
fn a_delivery_without_a_job_recorded_into_the_due_set_makes_no_line() {
    let lines = Lines::new(100);
    let mut no_job = d("a", 1);
    no_job.job = None;
    lines.enter_away(&no_job, Duration::from_secs(1));
    assert!(matches!(lines.enter(d("a", 2)), Entered::Go(_)));
}

#[test]
fn a_line_whose_heads_were_all_sent_to_the_due_set_goes_on_when_one_never_comes_back() {
    let lines = Lines::new(100);
    // Both recorded straight into the due set; another instance takes e1, this one gets e2
    // back first.
    lines.enter_away(&d("a", 1), Duration::ZERO);
    lines.enter_away(&d("a", 2), Duration::ZERO);
    assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
    let later = Instant::now() + AWAY_GRACE + Duration::from_millis(1);
    let go: Vec<String> = lines.expire(later).into_iter().map(turn).collect();
    assert_eq!(go, ["e2"]);
    assert!(leave(&lines, "a", 2).is_none());
    assert_eq!(lines.waiting(), 0);
    // A head that never comes back with nothing behind it: its line is let go too.
    lines.enter_away(&d("b", 1), Duration::ZERO);
    assert!(lines.expire(later).is_empty());
    assert_eq!(id(lines.enter(d("b", 5))), "e5");
}

#[test]
fn a_delivery_back_before_its_place_is_taken_stays_the_head_here() {
    let lines = Lines::new(100);
    // The poller took it back before intake had set its place: it is here, in an attempt.
    assert_eq!(id(lines.enter(d("a", 1))), "e1");
    lines.enter_away(&d("a", 1), Duration::ZERO);
    assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
    // No grace runs out under an attempt in flight.
    let later = Instant::now() + AWAY_GRACE + Duration::from_secs(1);
    assert!(lines.expire(later).is_empty());
    assert_eq!(leave(&lines, "a", 1).as_deref(), Some("e2"));
}

/// `d` for another webhook.
fn for_webhook(webhook: &str, job: &str, sequence: u64) -> Delivery {
    Delivery {
        webhook_id: Arc::from(webhook),
        ..d(job, sequence)
    }
}

#[test]
fn a_webhook_that_fills_the_bound_on_ids_does_not_take_order_from_another() {
    let lines = Lines::new(1);
    // A hanging webhook fills every id the bound allows, and then goes on out of order.
    assert_eq!(id(lines.enter(d("a", 1))), "e1");
    assert!(matches!(lines.enter(d("a", 2)), Entered::Held));
    for n in 0..KEPT_PER_WAITING as u64 {
        assert!(matches!(lines.enter(d("a", 3 + n)), Entered::Kept));
    }
    let over = 3 + KEPT_PER_WAITING as u64;
    assert_eq!(id(lines.enter(d("a", over))), format!("e{over}"));
    // A healthy webhook's job still keeps its order: up to its share (half, with two webhooks
    // holding ids), its later events wait behind its head.
    let good = |job: &str, n: u64| for_webhook("good", job, n);
    assert_eq!(id(lines.enter(good("g", 100))), "e100");
    let share = KEPT_PER_WAITING as u64 / 2;
    for n in 0..share {
        assert!(
            matches!(lines.enter(good("g", 101 + n)), Entered::Kept),
            "event {n} behind the healthy webhook's head was not held"
        );
    }
    // Past its share it goes on out of order too: the ids kept stay bounded (twice the bound).
    assert!(matches!(
        lines.enter(good("g", 101 + share)),
        Entered::Go(_)
    ));
}

#[test]
fn growing_the_lines_never_moves_more_than_a_share_of_them_at_once() {
    // A webhook that hangs fills lines one job at a time. One table would be rehashed whole,
    // under the lock, each time it doubled; a shard moves only its own lines.
    let lines = Lines::new(1000);
    let bound = lines.max_lines();
    let mut most_moved = 0;
    for job in 0..bound as u64 {
        let delivery = d(&format!("job-{job}"), job + 1);
        let before: Vec<usize> = {
            let state = lines.state.lock();
            state.lines.maps.iter().map(HashMap::capacity).collect()
        };
        if job % 2 == 0 {
            lines.enter_away(&delivery, Duration::from_secs(60));
        } else {
            assert_eq!(id(lines.enter(delivery.clone())), delivery.event_id);
            lines.away(&delivery, Duration::from_secs(60));
        }
        let state = lines.state.lock();
        for (map, capacity) in state.lines.maps.iter().zip(before) {
            if map.capacity() != capacity {
                most_moved = most_moved.max(map.len());
            }
        }
    }
    assert_eq!(lines.state.lock().lines.len(), bound);
    // A sixty-fourth of the lines each, give or take: far less than a sixteenth at once.
    assert!(
        most_moved <= bound / 16,
        "a growth moved {most_moved} of {bound} lines"
    );
}
