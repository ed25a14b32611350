//! `skylane-relay`: the edge relay.
//!
//! **Status:** reserved in the workspace; the relay (QUIC termination, GeoIP and
//! RTT routing, per-class priority scheduling, fan-out, resume, drain) is tracked
//! by the relay issue and not written yet.
//!
//! **Contract (for when it lands):** every stateful core (routing table, priority
//! scheduler, session table, edge validators) is a sans-IO state machine that takes
//! `now` as an argument; tokio and quinn code is a thin shell around them.
