//! dockerd's userland proxies: the docker-proxy processes running now, read from /proc. Each
//! one's command line says what it relays (`-proto tcp -host-ip 0.0.0.0 -host-port 18080
//! -container-ip 172.18.0.2 -container-port 80`), the same on Docker 20.10 to 29.

use std::{fs, net::IpAddr};

use crate::model::{IpProto, topology::UserlandProxy};

/// The process name dockerd gives its proxies (its `--userland-proxy-path` binary).
const PROXY_COMM: &str = "docker-proxy";

/// Every docker-proxy process on the host (none: the userland proxy is off, or nothing is
/// published). A process that exits meanwhile is left out.
pub fn running() -> Vec<UserlandProxy> {
    let Ok(proc) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut proxies: Vec<UserlandProxy> = proc
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == PROXY_COMM)
        })
        .filter_map(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&str> = cmdline
                .split(|b| *b == 0)
                .filter_map(|a| std::str::from_utf8(a).ok())
                .collect();
            parse_command_line(pid, &args)
        })
        .collect();
    proxies.sort_by_key(|p| p.pid);
    proxies
}

/// A docker-proxy command line (its arguments after the program), or None when it lacks
/// what a relay needs.
fn parse_command_line(pid: u32, args: &[&str]) -> Option<UserlandProxy> {
    let value = |flag: &str| {
        args.iter()
            .position(|a| *a == flag || a.strip_prefix('-') == Some(flag))
            .and_then(|i| args.get(i + 1))
            .copied()
    };
    let protocol = IpProto::from_name(value("-proto")?)?;
    Some(UserlandProxy {
        pid,
        protocol,
        host_ip: value("-host-ip")?.parse::<IpAddr>().ok()?,
        host_port: value("-host-port")?.parse().ok()?,
        container_ip: value("-container-ip")?.parse::<IpAddr>().ok()?,
        container_port: value("-container-port")?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_a_proxy_relays_from_its_command_line() {
        // Docker 28 (listening socket handed over by dockerd) and Docker 20.10.
        let docker28 = "/usr/sbin/docker-proxy -proto udp -host-ip :: -host-port 15353 -container-ip fd00:213:5::10 -container-port 5353 -use-listen-fd";
        let p = parse_command_line(41, &docker28.split(' ').collect::<Vec<_>>()).unwrap();
        assert_eq!(
            (p.pid, p.protocol, p.host_port, p.container_port),
            (41, IpProto::UDP, 15353, 5353)
        );
        assert_eq!(p.listen_words(), "[::]:15353");
        assert!(p.listens_at(IpProto::UDP, "fd00::1".parse().unwrap(), Some(15353)));
        assert!(!p.listens_at(IpProto::UDP, "127.0.0.1".parse().unwrap(), Some(15353)));
        assert!(p.relays_to(IpProto::UDP, "fd00:213:5::10".parse().unwrap(), Some(5353)));
        let docker20 = "/usr/bin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip 172.20.0.5 -container-port 8080";
        let p = parse_command_line(7, &docker20.split(' ').collect::<Vec<_>>()).unwrap();
        assert!(p.listens_at(IpProto::TCP, "127.0.0.1".parse().unwrap(), Some(8080)));
        assert!(!p.listens_at(IpProto::UDP, "127.0.0.1".parse().unwrap(), Some(8080)));
        assert!(parse_command_line(8, &["/usr/bin/docker-proxy", "-proto", "tcp"]).is_none());
    }
}
