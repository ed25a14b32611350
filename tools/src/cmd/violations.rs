//! `skylane violations URL --player P --since 1h`: the violations an origin's
//! store kept (its own detectors' and the edge's, as relays reported them),
//! through its admin endpoint, one line each, or the endpoint's JSON.

use clap::Args;
use skylane_origin::ViolationRecord;

use super::admin::AdminTarget;

/// Options of `skylane violations`.
#[derive(Debug, Args)]
pub(crate) struct ViolationsCmd {
    #[command(flatten)]
    target: AdminTarget,
    /// Only this player's (the subject its tokens carry).
    #[arg(long)]
    player: Option<String>,
    /// Only those of the last, e.g. 1h, 30m, 7d.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// At most this many (the most recent).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Print the endpoint's JSON as it is.
    #[arg(long)]
    json: bool,
}

impl ViolationsCmd {
    pub(crate) fn run(self) -> anyhow::Result<()> {
        let mut path = format!("/violations?limit={}", self.limit);
        if let Some(p) = &self.player {
            path.push_str("&player=");
            path.push_str(&encode(p));
        }
        if let Some(d) = self.since {
            path.push_str(&format!("&since_secs={}", d.as_secs()));
        }
        let text = self.target.call("GET", &path)?;
        if self.json {
            println!("{}", text.trim());
            return Ok(());
        }
        let records: Vec<ViolationRecord> = serde_json::from_str(&text)?;
        if records.is_empty() {
            println!("no violations");
        }
        for r in &records {
            println!("{}", line(r));
        }
        Ok(())
    }
}

/// One record as a line: when, where (world and tick, for `skylane replay`),
/// who, what, and what was done.
pub(crate) fn line(r: &ViolationRecord) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(r.at_ms);
    let measured = match (r.value, r.threshold) {
        (Some(v), Some(t)) => format!(" [{v:.2} vs {t:.2}]"),
        _ => String::new(),
    };
    let relay = r
        .relay
        .as_deref()
        .map(|x| format!(" via {x}"))
        .unwrap_or_default();
    format!(
        "{} world {} tick {} {} ({:?}{relay}) {}: {}{measured} -> {}",
        humantime::format_rfc3339_seconds(at),
        r.world,
        r.tick,
        r.player,
        r.source,
        r.detector,
        r.evidence,
        r.action,
    )
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("p-1_x.y~"), "p-1_x.y~");
        assert_eq!(encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn a_line_says_where_to_look_in_the_journal() {
        let r = ViolationRecord {
            id: 1,
            at_ms: 0,
            world: 7,
            tick: 42,
            player: "cheat".into(),
            session: 3,
            source: skylane_origin::Source::Origin,
            detector: "action_rate".into(),
            evidence: "500 actions/s (max 120)".into(),
            value: Some(500.0),
            threshold: Some(120.0),
            action: "kick".into(),
            relay: None,
        };
        assert_eq!(
            line(&r),
            "1970-01-01T00:00:00Z world 7 tick 42 cheat (Origin) action_rate: \
             500 actions/s (max 120) [500.00 vs 120.00] -> kick"
        );
    }
}
