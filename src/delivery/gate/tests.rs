//! Tests of the endpoint gate: seats, classes, limits, turns and parking.

use std::sync::Arc;

use super::*;
use crate::event::EventKind;

const SLOW_AFTER: Duration = Duration::from_millis(250);

fn gate(first: usize, slow: usize, max_per_endpoint: usize, max_parked: usize) -> EndpointGate {
    EndpointGate::new(GateConfig {
        first,
        retry: 1,
        slow,
        max_per_endpoint,
        slow_after: SLOW_AFTER,
        max_parked,
        attempt_timeout: Duration::from_secs(30),
    })
}

fn delivery(webhook: &str, n: u32) -> Delivery {
    Delivery {
        webhook_id: Arc::from(webhook),
        event_id: format!("{webhook}-{n}"),
        event_type: Arc::from("job.completed"),
        kind: EventKind::JobCompleted,
        body: Arc::from(Vec::new()),
        attempts: 0,
        created_ms: 0,
        job: None,
        sequence: None,
    }
}

fn quick() -> Option<Outcome> {
    Some(Outcome {
        took: Duration::from_millis(1),
        unreachable: false,
    })
}

fn slow_answer() -> Option<Outcome> {
    Some(Outcome {
        took: Duration::from_secs(4),
        unreachable: false,
    })
}

fn timeout() -> Option<Outcome> {
    Some(Outcome {
        took: Duration::from_secs(30),
        unreachable: true,
    })
}

#[track_caller]
fn run(admission: Admission) -> (Ticket, String) {
    match admission {
        Admission::Run(ticket, d) => (ticket, d.event_id),
        other => panic!("expected to run, got {other:?}"),
    }
}

#[track_caller]
fn next_run(next: Next) -> (Ticket, String) {
    match next {
        Next::Run(ticket, d) => (ticket, d.event_id),
        other => panic!("expected another attempt, got {other:?}"),
    }
}

/// A thread takes a seat to read the first-attempt queue.
#[track_caller]
fn read(gate: &EndpointGate) -> Seat {
    match gate.take_seat(Duration::ZERO) {
        Some(Next::Read(seat)) => seat,
        other => panic!("expected a seat to read, got {other:?}"),
    }
}

/// A thread reads `d` on a first-attempt seat and admits it; it keeps its seat (given back here)
/// unless the delivery took it.
#[track_caller]
fn admit(gate: &EndpointGate, d: Delivery) -> Admission {
    let seat = read(gate);
    assert_eq!(seat, Seat::First);
    let admission = gate.admit(d, seat, Duration::ZERO);
    if !matches!(admission, Admission::Run(..)) {
        gate.give_back(seat);
    }
    admission
}

/// Releases `ticket` and every attempt the thread is handed after it, as quick answers.
fn drain(gate: &EndpointGate, ticket: Ticket) {
    let mut next = gate.release(ticket, quick(), None);
    while let Next::Run(ticket, _) = next {
        next = gate.release(ticket, quick(), None);
    }
    if let Next::Read(seat) = next {
        gate.give_back(seat);
    }
}

/// Makes `webhook` known to be quick: one probe, answered in 1 ms.
#[track_caller]
fn prove_quick(gate: &EndpointGate, webhook: &str) {
    let (ticket, _) = run(admit(gate, delivery(webhook, 0)));
    assert!(matches!(
        gate.release(ticket, quick(), None),
        Next::Seatless
    ));
}

#[test]
fn a_quick_endpoint_holds_at_most_its_limit_and_its_parked_work_runs_in_order() {
    let gate = gate(8, 4, 2, 100);
    prove_quick(&gate, "q");
    let (a, _) = run(admit(&gate, delivery("q", 1)));
    let (b, _) = run(admit(&gate, delivery("q", 2)));
    assert!(matches!(admit(&gate, delivery("q", 3)), Admission::Parked));
    assert!(matches!(admit(&gate, delivery("q", 4)), Admission::Parked));
    // Another endpoint is not affected.
    prove_quick(&gate, "other");
    // The thread ending an attempt takes the next parked one, in order.
    let (c, id) = next_run(gate.release(a, quick(), None));
    assert_eq!(id, "q-3");
    let (d, id) = next_run(gate.release(b, quick(), None));
    assert_eq!(id, "q-4");
    assert!(matches!(
        gate.release(c, quick(), None),
        Next::Read(Seat::First)
    ));
    assert!(matches!(
        gate.release(d, quick(), None),
        Next::Read(Seat::First)
    ));
    assert_eq!((gate.parked(), gate.in_flight()), (0, 0));
}

#[test]
fn an_unknown_endpoint_probes_on_a_slow_seat_one_attempt_at_a_time() {
    let gate = gate(2, 4, 4, 100);
    // Both first seats are taken by readers; one admits a new endpoint's delivery.
    let seat = read(&gate);
    let _other = read(&gate);
    let (probe, _) = run(gate.admit(delivery("new", 1), seat, Duration::ZERO));
    assert_eq!(gate.in_flight_slow(), 1);
    // The first seat it came in on is free again, for another thread.
    let seat = read(&gate);
    // Until the probe ends, the endpoint's other deliveries wait.
    assert!(matches!(
        gate.admit(delivery("new", 2), seat, Duration::ZERO),
        Admission::Parked
    ));
    // It answers quickly: its next runs on the probe's seat.
    let (ticket, id) = next_run(gate.release(probe, quick(), None));
    assert_eq!(id, "new-2");
    assert!(matches!(
        gate.release(ticket, quick(), None),
        Next::Seatless
    ));
    // Known quick now: it runs on the seat it comes in on.
    let (ticket, _) = run(gate.admit(delivery("new", 3), seat, Duration::ZERO));
    assert_eq!(gate.in_flight_slow(), 0);
    assert!(matches!(
        gate.release(ticket, quick(), None),
        Next::Read(Seat::First)
    ));
}

#[test]
fn with_the_slow_seats_taken_new_endpoints_probe_on_at_most_half_the_first_seats() {
    let gate = gate(4, 2, 4, 100);
    prove_quick(&gate, "healthy");
    // Two probes take the slow seats, two more half the first seats.
    let mut probes: Vec<Ticket> = (0..4)
        .map(|n| run(admit(&gate, delivery(&format!("new{n}"), 1))).0)
        .collect();
    assert_eq!(gate.in_flight_slow(), 2);
    // More new endpoints wait for a seat; the known-quick endpoint still runs.
    assert!(matches!(
        admit(&gate, delivery("new4", 1)),
        Admission::Parked
    ));
    let (healthy, _) = run(admit(&gate, delivery("healthy", 1)));
    drain(&gate, healthy);
    // A slow seat frees up (a probe ends slowly): the waiting new endpoint gets it.
    let (ticket, id) = next_run(gate.release(probes.remove(0), slow_answer(), None));
    assert_eq!(id, "new4-1");
    for ticket in probes.into_iter().chain([ticket]) {
        drain(&gate, ticket);
    }
    assert_eq!((gate.parked(), gate.in_flight()), (0, 0));
}

#[test]
fn a_slow_endpoint_runs_on_slow_seats_one_at_a_time_and_one_more_per_answer() {
    let gate = gate(4, 4, 4, 100);
    prove_quick(&gate, "s");
    // An attempt takes 4 s: the endpoint is slow from then on, with a limit of 2 (the answer
    // adds one to the one a slow endpoint starts with).
    let (ticket, _) = run(admit(&gate, delivery("s", 1)));
    assert!(matches!(
        gate.release(ticket, slow_answer(), None),
        Next::Read(Seat::First)
    ));
    gate.give_back(Seat::First);
    let (a, _) = run(admit(&gate, delivery("s", 2)));
    let (b, _) = run(admit(&gate, delivery("s", 3)));
    assert_eq!(gate.in_flight_slow(), 2);
    assert!(matches!(admit(&gate, delivery("s", 4)), Admission::Parked));
    assert!(matches!(admit(&gate, delivery("s", 5)), Admission::Parked));
    // A timeout halves its limit to 1: with one still in flight, nothing more starts.
    assert!(matches!(gate.release(a, timeout(), None), Next::Seatless));
    let (c, id) = next_run(gate.release(b, timeout(), None));
    assert_eq!(id, "s-4");
    // An answer, slow as it is, lets one more run.
    let (d, id) = next_run(gate.release(c, slow_answer(), None));
    assert_eq!(id, "s-5");
    assert!(matches!(
        gate.release(d, slow_answer(), None),
        Next::Seatless
    ));
    assert_eq!((gate.parked(), gate.in_flight()), (0, 0));
}

#[test]
fn slow_seats_go_to_slow_endpoints_in_turn() {
    let gate = gate(4, 1, 4, 100);
    // Two endpoints known to be slow (a probe each answered after 4 s).
    for name in ["a", "b"] {
        let (ticket, _) = run(admit(&gate, delivery(name, 0)));
        assert!(matches!(
            gate.release(ticket, slow_answer(), None),
            Next::Seatless
        ));
    }
    // One slow seat: `a` takes it, the rest waits.
    let (ticket, _) = run(admit(&gate, delivery("a", 1)));
    for (name, n) in [("a", 2), ("b", 1), ("a", 3), ("b", 2)] {
        assert!(matches!(admit(&gate, delivery(name, n)), Admission::Parked));
    }
    // The seat goes to `b`, then `a`, then `b`: never straight back to the one that held it.
    let mut order = Vec::new();
    let mut next = gate.release(ticket, slow_answer(), None);
    while let Next::Run(ticket, d) = next {
        order.push(d.event_id);
        next = gate.release(ticket, slow_answer(), None);
    }
    assert_eq!(order, ["b-1", "a-2", "b-2", "a-3"]);
}

#[test]
fn an_attempt_that_runs_long_on_a_first_seat_moves_to_a_slow_seat() {
    let gate = gate(2, 2, 4, 100);
    prove_quick(&gate, "h");
    let (a, _) = run(admit(&gate, delivery("h", 1)));
    let (b, _) = run(admit(&gate, delivery("h", 2)));
    let retry = gate.take_seat(Duration::ZERO);
    assert!(matches!(retry, Some(Next::Read(Seat::Retry))), "{retry:?}");
    assert!(
        gate.take_seat(Duration::ZERO).is_none(),
        "every seat is busy"
    );
    // A quarter of a second later both still run: they move to slow seats, the first seats
    // are free for other threads, and the endpoint is slow (its next waits for a slow seat).
    gate.watch(Instant::now() + SLOW_AFTER);
    assert_eq!(gate.in_flight_slow(), 2);
    assert!(matches!(admit(&gate, delivery("h", 3)), Admission::Parked));
    assert_eq!(read(&gate), Seat::First);
    assert_eq!(read(&gate), Seat::First);
    // They end on their slow seats; the parked one runs when its one-at-a-time limit allows.
    assert!(matches!(gate.release(a, timeout(), None), Next::Seatless));
    let (c, id) = next_run(gate.release(b, timeout(), None));
    assert_eq!(id, "h-3");
    assert!(matches!(gate.release(c, timeout(), None), Next::Seatless));
    assert_eq!((gate.parked(), gate.in_flight()), (0, 0));
}

#[test]
fn parking_is_bounded_and_a_quick_endpoint_always_finds_room() {
    let gate = gate(8, 1, 1, 8);
    prove_quick(&gate, "q");
    // A hung endpoint: its probe takes the slow seat and stalls.
    let (hung, _) = run(admit(&gate, delivery("hung", 0)));
    std::thread::sleep(SLOW_AFTER + Duration::from_millis(50));
    gate.watch(Instant::now());
    // Not known to be quick: it parks a quarter of the space, then overflows.
    for n in 1..=2 {
        assert!(matches!(
            admit(&gate, delivery("hung", n)),
            Admission::Parked
        ));
    }
    match admit(&gate, delivery("hung", 3)) {
        // Two parked behind an attempt stalled for 300 ms, one at a time.
        Admission::Overflow(_, wait) => assert!(wait >= Duration::from_millis(600), "{wait:?}"),
        other => panic!("expected an overflow, got {other:?}"),
    }
    // Slow and unknown endpoints together park at most half: a new one parks 2 more.
    let (probe, _) = run(admit(&gate, delivery("new", 0)));
    for n in 1..=2 {
        assert!(matches!(
            admit(&gate, delivery("new", n)),
            Admission::Parked
        ));
    }
    assert!(matches!(
        admit(&gate, delivery("new", 3)),
        Admission::Overflow(..)
    ));
    // The quick endpoint (limit 1) parks in the other half.
    let (q, _) = run(admit(&gate, delivery("q", 1)));
    for n in 2..=5 {
        assert!(matches!(admit(&gate, delivery("q", n)), Admission::Parked));
    }
    assert_eq!(gate.parked(), 8);
    // Full: a quick delivery waits briefly for room, then overflows.
    let started = Instant::now();
    let seat = read(&gate);
    assert!(matches!(
        gate.admit(delivery("q", 6), seat, Duration::from_millis(50)),
        Admission::Overflow(..)
    ));
    assert!(started.elapsed() >= Duration::from_millis(50));
    gate.give_back(seat);
    for ticket in [hung, probe, q] {
        drain(&gate, ticket);
    }
    assert_eq!((gate.parked(), gate.in_flight()), (0, 0));
}

#[test]
fn a_full_parking_space_is_waited_for_briefly() {
    let gate = Arc::new(gate(8, 1, 1, 2));
    prove_quick(&gate, "a");
    let (ticket, _) = run(admit(&gate, delivery("a", 1)));
    for n in 2..=3 {
        assert!(matches!(admit(&gate, delivery("a", n)), Admission::Parked));
    }
    // Full, and an attempt ends meanwhile: the waiting delivery takes the freed place.
    let seat = read(&gate);
    let waiter = {
        let gate = gate.clone();
        std::thread::spawn(move || gate.admit(delivery("a", 4), seat, Duration::from_secs(10)))
    };
    std::thread::sleep(Duration::from_millis(50));
    let (ticket, id) = next_run(gate.release(ticket, quick(), None));
    assert_eq!(id, "a-2");
    let admitted = waiter.join().map_err(|_| "the waiter panicked");
    assert!(matches!(admitted, Ok(Admission::Parked)), "{admitted:?}");
    drain(&gate, ticket);
    assert_eq!(gate.parked(), 0);
}

#[test]
fn the_next_of_a_line_is_placed_when_an_attempt_ends() {
    let gate = gate(8, 1, 4, 100);
    prove_quick(&gate, "q");
    let (ticket, _) = run(admit(&gate, delivery("q", 1)));
    let (ticket, id) = next_run(gate.release(ticket, quick(), Some(delivery("q", 2))));
    assert_eq!(id, "q-2");
    assert!(matches!(
        gate.release(ticket, quick(), None),
        Next::Read(Seat::First)
    ));
}

#[test]
fn an_endpoint_waiting_for_a_slow_seat_overflows_for_as_long_as_the_slow_seats_are_busy() {
    let gate = gate(2, 1, 1, 8);
    // The one slow seat is held by an attempt that hangs, the first-attempt seats' probes too.
    let (hung, _) = run(admit(&gate, delivery("hung", 0)));
    let (probe, _) = run(admit(&gate, delivery("other", 0)));
    std::thread::sleep(Duration::from_millis(400));
    // A new endpoint waits for a seat to probe on: it parks its share, then overflows for at
    // least as long as the slow seat has been busy.
    for n in 0..2 {
        assert!(matches!(
            admit(&gate, delivery("new", n)),
            Admission::Parked
        ));
    }
    match admit(&gate, delivery("new", 2)) {
        Admission::Overflow(_, wait) => assert!(wait >= Duration::from_millis(400), "{wait:?}"),
        other => panic!("expected an overflow, got {other:?}"),
    }
    drain(&gate, hung);
    drain(&gate, probe);
}

#[test]
fn overflowing_tells_intake_which_endpoints_would_only_overflow() {
    let gate = gate(8, 1, 1, 8);
    prove_quick(&gate, "q");
    let ids: Vec<Arc<str>> = ["hung", "q", "never seen"].map(Arc::from).to_vec();
    let (hung, _) = run(admit(&gate, delivery("hung", 0)));
    std::thread::sleep(SLOW_AFTER + Duration::from_millis(50));
    gate.watch(Instant::now());
    // Room to park: a new delivery has a place, nothing overflows.
    assert_eq!(gate.overflowing(&ids), [None, None, None]);
    for n in 1..=2 {
        assert!(matches!(
            admit(&gate, delivery("hung", n)),
            Admission::Parked
        ));
    }
    // Its share is parked: a new delivery would overflow; what is parked and it take three
    // attempts of at least 300 ms (the attempt in flight has hung that long).
    let said = gate.overflowing(&ids);
    let Some(wait) = said[0] else {
        panic!("a hung endpoint with its share parked is not backed up: {said:?}");
    };
    assert!(wait >= Duration::from_millis(900), "{wait:?}");
    assert_eq!(said[1..], [None, None]);
    // The next one sent back is due an attempt's time after it, not at the same time.
    match admit(&gate, delivery("hung", 3)) {
        Admission::Overflow(_, admitted) => {
            assert!(
                admitted >= wait + Duration::from_millis(300),
                "{admitted:?} after {wait:?}"
            );
        }
        other => panic!("expected an overflow, got {other:?}"),
    }
    // A quick endpoint is never backed up in this sense: it waits for room instead.
    let (q, _) = run(admit(&gate, delivery("q", 1)));
    for n in 2..=7 {
        let _ = admit(&gate, delivery("q", n));
    }
    assert_eq!(gate.parked(), 8);
    assert_eq!(gate.overflowing(&ids[1..]), [None, None]);
    drain(&gate, hung);
    drain(&gate, q);
    assert_eq!(gate.overflowing(&ids), [None, None, None]);
}
