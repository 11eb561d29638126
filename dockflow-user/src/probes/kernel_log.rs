//! --debug-kernel: the kernel programs' own diagnostics (aya-log), such as why the filter kept
//! or skipped a frame at tc, printed on stderr as they come. Off by default, and then free:
//! the programs' log level is a load-time constant the verifier prunes the logging code with.

use anyhow::{Result, anyhow};
use aya::Ebpf;
use aya_log::EbpfLogger;
use dockflow_common::{FilterReason, ProbePoint};

use crate::model::PointNames;

/// aya-log's load-time constant in the programs: the most verbose level that is logged.
pub const LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";
/// aya_log_common::Level::Debug; 0 logs nothing.
pub const LEVEL_DEBUG: u8 = 4;
pub const LEVEL_OFF: u8 = 0;

/// Prints each message on stderr, marked as the kernel's.
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let text = record.args().to_string();
        eprintln!("dockflow: kernel: {}", in_words(&text).unwrap_or(text));
    }

    fn flush(&self) {}
}

/// The programs log numbers (strings cost the verifier dearly): "tc probe=1 if=7 why=2
/// held=0" reads "tc ingress if7: kept: to or from a target address".
fn in_words(text: &str) -> Option<String> {
    let mut fields = text
        .strip_prefix("tc ")?
        .split(' ')
        .map(|f| f.split_once('=').map(|(_, v)| v));
    let mut next = || fields.next().flatten()?.parse::<u32>().ok();
    let probe = ProbePoint::from_u8(u8::try_from(next()?).ok()?)?;
    let ifindex = next()?;
    let why = FilterReason::from_u8(u8::try_from(next()?).ok()?)?;
    let held = next()? != 0;
    Some(format!(
        "{} if{ifindex}: {}{}",
        probe.name(),
        reason_words(why),
        if held {
            ", then held back (--per-connection)"
        } else {
            ""
        }
    ))
}

/// Why the tc filter kept or skipped a frame, in words.
fn reason_words(why: FilterReason) -> &'static str {
    match why {
        FilterReason::NoFilter => "kept: no filter (bare interfaces)",
        FilterReason::NotIp => "skipped: not an IP or ARP frame it can read",
        FilterReason::Address => "kept: to or from a target address",
        FilterReason::Port => "kept: to or from a published port",
        FilterReason::ReplyTuple => "kept: a learned reply tuple of a NATed connection",
        FilterReason::NotTarget => {
            "skipped: neither the target's addresses, nor its ports, nor a learned reply"
        }
        FilterReason::LeftOut => "skipped: its connection is one the filter expression leaves out",
    }
}

/// The programs' log messages, read when asked.
pub struct KernelLog(EbpfLogger<Stderr>);

impl KernelLog {
    /// Takes the log ring buffer from the loaded programs (after every program that writes to
    /// it was loaded: the netfilter loader needs the map in place).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        EbpfLogger::init_with_logger(ebpf, Stderr)
            .map(Self)
            .map_err(|e| anyhow!("reading the kernel programs' log: {e}"))
    }

    /// Prints what the programs logged since the last call.
    pub fn print(&mut self) {
        self.0.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_the_filters_numbers_into_words() {
        assert_eq!(
            in_words("tc probe=1 if=7 why=2 held=0").as_deref(),
            Some("tc ingress if7: kept: to or from a target address")
        );
        assert_eq!(
            in_words("tc probe=2 if=9 why=3 held=1").as_deref(),
            Some(
                "tc egress if9: kept: to or from a published port, then held back (--per-connection)"
            )
        );
        assert_eq!(in_words("tc probe=2 if=9 why=77 held=1"), None);
        assert_eq!(in_words("something else"), None);
    }
}
