//! `skylane-client`: the library games link against.
//!
//! **Status:** reserved in the workspace; best-relay choice, typed send and
//! receive, clock sync, reconnect and resume, and the spectator API are tracked by
//! the client-sdk issue and not written yet.
