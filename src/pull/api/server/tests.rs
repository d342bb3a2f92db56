//! Unit tests of `server`.

use super::*;

fn gate(max: usize, per_client: usize, allowed: &str) -> Gate {
    Gate::new(&ServerLimits {
        workers: 1,
        max_connections: max,
        max_per_client: per_client,
        allowed: crate::config::client_cidrs(allowed).expect("ranges"),
        head_timeout: Duration::from_secs(1),
        shutdown_grace_secs: 1,
    })
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last))
}

fn total(gate: &Gate) -> usize {
    lock(&gate.places).total
}

#[test]
fn the_gate_admits_up_to_the_limits_and_frees_a_place_when_a_pass_drops() {
    let gate = gate(3, 2, "");
    let a = gate.admit(ip(2)).expect("first");
    let _b = gate.admit(ip(2)).expect("second");
    assert!(
        gate.admit(ip(2)).is_none(),
        "a third from one address is refused"
    );
    assert_eq!(total(&gate), 2, "a refusal leaves no count");
    drop(a);
    assert!(gate.admit(ip(2)).is_some(), "a place is free again");
}

#[test]
fn a_full_gate_evicts_the_oldest_of_the_biggest_holder_for_an_address_holding_fewer() {
    let gate = gate(4, 3, "");
    let flood: Vec<Pass> = (0..3).map(|_| gate.admit(ip(2)).expect("flood")).collect();
    let other = gate.admit(ip(3)).expect("other");
    assert_eq!(total(&gate), 4);
    let verifier = gate.admit(ip(1)).expect("the verifier gets in");
    assert_eq!(total(&gate), 4, "one place was taken back");
    // The oldest flood connection was told to close; its drop frees nothing twice.
    let evicted = flood[0].evicted.clone();
    let notified = evicted.notified();
    futures_util::pin_mut!(notified);
    assert!(futures_util::FutureExt::now_or_never(notified).is_some());
    drop(flood);
    assert_eq!(total(&gate), 2);
    // Every address holding one: a newcomer holding none still evicts one.
    let gate2 = self::gate(2, 1, "");
    let _x = gate2.admit(ip(5)).expect("x");
    let _y = gate2.admit(ip(6)).expect("y");
    assert!(gate2.admit(ip(5)).is_none(), "per-client cap");
    assert!(
        gate2.admit(ip(7)).is_some(),
        "a newcomer with none gets a place"
    );
    drop((other, verifier));
}

#[test]
fn an_ipv6_host_counts_once_for_its_whole_64() {
    let gate = gate(8, 2, "");
    let v6 = |last: u16| IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, last));
    let _a = gate.admit(v6(1)).expect("first");
    let _b = gate.admit(v6(2)).expect("second");
    assert!(gate.admit(v6(3)).is_none(), "a third from the same /64");
    assert!(gate
        .admit(IpAddr::V6(std::net::Ipv6Addr::new(
            0xfd00, 0, 0, 2, 0, 0, 0, 1
        )))
        .is_some());
}

#[test]
fn among_equal_holders_the_oldest_connection_is_evicted() {
    let gate = gate(2, 1, "");
    let old = gate.admit(ip(2)).expect("old");
    let young = gate.admit(ip(3)).expect("young");
    let _newcomer = gate.admit(ip(4)).expect("newcomer");
    let fired = |pass: &Pass| {
        let notified = pass.evicted.notified();
        futures_util::pin_mut!(notified);
        futures_util::FutureExt::now_or_never(notified).is_some()
    };
    assert!(fired(&old), "the oldest connection makes room");
    assert!(!fired(&young), "the younger one stays");
}

#[test]
fn addresses_outside_the_allow_list_are_refused() {
    let gate = gate(8, 8, "127.0.0.1/32");
    let _kept = gate.admit(ip(1)).expect("allowed");
    assert!(gate.admit(ip(2)).is_none());
    assert_eq!(total(&gate), 1);
}
