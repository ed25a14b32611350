//! Writing an action: movement as a datagram when it fits, every other class on
//! its own stream (opened on first use, prioritised by class).

use bytes::Bytes;
use quinn::Connection;
use skylane_proto::{
    encode_datagram, encode_frame_to_bytes, ClientMsg, EventClass, DEFAULT_MAX_FRAME, MAX_DATAGRAM,
};

use super::Driver;

impl Driver {
    pub(super) async fn write(
        &mut self,
        conn: &Connection,
        msg: ClientMsg,
        class: EventClass,
    ) -> Result<(), String> {
        if class == EventClass::Movement {
            if let Ok(d) = encode_datagram(&msg) {
                if d.len() <= MAX_DATAGRAM && conn.max_datagram_size().is_some_and(|m| d.len() <= m)
                {
                    return conn.send_datagram(d).map_err(|e| e.to_string());
                }
            }
        }
        let bytes: Bytes =
            encode_frame_to_bytes(&msg, DEFAULT_MAX_FRAME).map_err(|e| e.to_string())?;
        let s = match self.streams.entry(class) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let s = conn.open_uni().await.map_err(|e| e.to_string())?;
                let _ = s.set_priority(class.quic_priority());
                v.insert(s)
            }
        };
        s.write_all(&bytes).await.map_err(|e| e.to_string())
    }
}
