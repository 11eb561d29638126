//! Reading dockflow's `--json` stream, as the end-to-end tests and the vmtest judge it: one
//! place, so both read a packet's hops the same way.

use serde_json::Value;

/// The packet objects among --json lines.
pub fn packets(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "packet").collect()
}

/// A packet's hops as "layer:kind" ("l3:hook", "l2:to_port", ...); none for a packet without.
pub fn hop_kinds(packet: &Value) -> Vec<String> {
    packet["hops"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            format!(
                "{}:{}",
                h["layer"].as_str().unwrap_or(""),
                h["kind"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// The explanation steps told for `connection`, in order.
pub fn explanation_steps(lines: &[Value], connection: &Value) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "explanation" && l["connection"] == *connection)
        .flat_map(|l| l["steps"].as_array().cloned().unwrap_or_default())
        .collect()
}
