//! A minimal Docker Engine API client over the unix socket: two GET endpoints, the container
//! list and container inspection. It speaks HTTP/1.0 (no chunking, the server closes the
//! connection after the body) instead of pulling in an HTTP stack, and gives up on a daemon
//! that does not answer within [`TIMEOUT`] rather than hang.

use std::{
    io::{Read as _, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// How long one API call may take, connecting, asking and reading the answer each.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What dockflow needs to know about one running container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    pub pid: u32,
    /// The Docker networks it is attached to.
    pub networks: Vec<String>,
    /// On every network it is attached to: IPv4 and, where IPv6 is enabled, IPv6.
    pub addresses: Vec<IpAddr>,
    pub published: Vec<PublishedPort>,
}

/// A Docker network and the containers on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    /// Names of the containers attached to it (running ones: Docker lists no others).
    pub containers: Vec<String>,
}

/// A `-p HOST:CONTAINER/PROTO` mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedPort {
    pub container_port: u16,
    pub protocol: String,
    pub host_port: u16,
}

pub struct Docker {
    socket: PathBuf,
}

impl Docker {
    /// Uses DOCKER_HOST when it names a unix socket, else the default socket.
    pub fn from_env() -> Result<Self> {
        let socket = match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.is_empty() => PathBuf::from(
                host.strip_prefix("unix://")
                    .ok_or_else(|| anyhow!("DOCKER_HOST={host} is not a unix:// socket; dockflow must run on the Docker host"))?,
            ),
            _ => PathBuf::from(DEFAULT_SOCKET),
        };
        Ok(Self { socket })
    }

    pub fn container(&self, name: &str) -> Result<Container> {
        let (status, body) = self.get(&format!("/containers/{}/json", encode_path(name)))?;
        match status {
            200 => {}
            404 => bail!("no such container: {name}"),
            _ => bail!(
                "Docker could not inspect container {name}: {}",
                api_message(&body)
            ),
        }
        let container = parse_container(&body)?;
        if container.pid == 0 {
            bail!("container {name} is not running");
        }
        Ok(container)
    }

    pub fn network(&self, name: &str) -> Result<Network> {
        let (status, body) = self.get(&format!("/networks/{}", encode_path(name)))?;
        match status {
            200 => Ok(parse_network(&body)),
            404 => bail!("no such Docker network: {name}"),
            _ => bail!(
                "Docker could not inspect network {name}: {}",
                api_message(&body)
            ),
        }
    }

    /// The ids of the running containers, in the daemon's order (cheap: one list call).
    pub fn running_ids(&self) -> Result<Vec<String>> {
        let (status, body) = self.get("/containers/json")?;
        if status != 200 {
            bail!("Docker could not list containers: {}", api_message(&body));
        }
        Ok(body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["Id"].as_str().map(str::to_string))
            .collect())
    }

    /// Every running container, inspected (one that stops meanwhile is left out).
    pub fn running_containers(&self) -> Result<Vec<Container>> {
        Ok(self
            .running_ids()?
            .iter()
            .filter_map(|id| self.container(id).ok())
            .collect())
    }

    fn get(&self, path: &str) -> Result<(u16, Value)> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "is dockerd running?"
                }
                std::io::ErrorKind::PermissionDenied => "run dockflow as root",
                _ => "",
            };
            anyhow!(
                "cannot reach the Docker daemon at {}: {e} ({hint})",
                self.socket.display()
            )
        })?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        stream.set_write_timeout(Some(TIMEOUT))?;
        let timed_out = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => anyhow!(
                "the Docker daemon at {} did not answer within {} s",
                self.socket.display(),
                TIMEOUT.as_secs()
            ),
            _ => anyhow!(e).context("talking to the Docker daemon"),
        };
        write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").map_err(timed_out)?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).map_err(timed_out)?;
        parse_response(&response)
    }
}

fn parse_response(response: &[u8]) -> Result<(u16, Value)> {
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed Docker API response"))?;
    let head = std::str::from_utf8(&response[..split]).context("Docker API header")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed Docker API status line"))?;
    let body = serde_json::from_slice(&response[split + 4..]).unwrap_or(Value::Null);
    Ok((status, body))
}

fn api_message(body: &Value) -> String {
    body["message"]
        .as_str()
        .unwrap_or("unexpected response")
        .to_string()
}

/// Container names and ids are `[a-zA-Z0-9][a-zA-Z0-9_.-]`; anything else cannot name one.
fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn parse_network(body: &Value) -> Network {
    let mut containers: Vec<String> = body["Containers"]
        .as_object()
        .into_iter()
        .flat_map(|c| c.values())
        .filter_map(|c| c["Name"].as_str().map(str::to_string))
        .collect();
    containers.sort();
    Network {
        name: body["Name"].as_str().unwrap_or_default().to_string(),
        containers,
    }
}

fn parse_container(body: &Value) -> Result<Container> {
    let networks = body["NetworkSettings"]["Networks"].as_object();
    let network_names = networks
        .into_iter()
        .flat_map(|n| n.keys().cloned())
        .collect();
    let addresses = networks
        .into_iter()
        .flat_map(|networks| networks.values())
        .flat_map(|ep| {
            ["IPAddress", "GlobalIPv6Address"]
                .iter()
                .filter_map(|field| ep[*field].as_str()?.parse().ok())
        })
        .collect();
    let mut published: Vec<PublishedPort> = body["NetworkSettings"]["Ports"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(spec, bindings)| {
            let (port, protocol) = spec.split_once('/').unwrap_or((spec, "tcp"));
            let container_port = port.parse().unwrap_or(0);
            bindings
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |b| {
                    Some(PublishedPort {
                        container_port,
                        protocol: protocol.to_string(),
                        host_port: b["HostPort"].as_str()?.parse().ok()?,
                    })
                })
        })
        .collect();
    published.sort_by_key(|p| (p.host_port, p.protocol.clone()));
    published.dedup();
    Ok(Container {
        name: body["Name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        pid: if body["State"]["Running"].as_bool() == Some(true) {
            body["State"]["Pid"].as_u64().unwrap_or(0) as u32
        } else {
            0
        },
        networks: network_names,
        addresses,
        published,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_running_container_with_published_ports() {
        let body = json!({
            "Id": "7249b9c4f11d", "Name": "/radius",
            "State": {"Running": true, "Pid": 4242},
            "NetworkSettings": {
                "Networks": {"infranet": {"NetworkID": "7ed8face", "IPAddress": "172.20.0.2", "MacAddress": "02:42:ac:14:00:02"}},
                "Ports": {"1812/udp": [{"HostIp": "0.0.0.0", "HostPort": "1812"}, {"HostIp": "::", "HostPort": "1812"}]}
            }
        });
        let c = parse_container(&body).unwrap();
        assert_eq!(c.name, "radius");
        assert_eq!(c.pid, 4242);
        assert_eq!(c.networks, ["infranet"]);
        assert_eq!(c.addresses, ["172.20.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            c.published,
            vec![PublishedPort {
                container_port: 1812,
                protocol: "udp".into(),
                host_port: 1812
            }]
        );
    }

    #[test]
    fn lists_a_networks_containers_by_name() {
        let body = json!({
            "Name": "infranet",
            "Containers": {
                "7249": {"Name": "radius", "IPv4Address": "172.20.0.2/16"},
                "81aa": {"Name": "proxy", "IPv4Address": "172.20.0.5/16"}
            }
        });
        assert_eq!(
            parse_network(&body),
            Network {
                name: "infranet".into(),
                containers: vec!["proxy".into(), "radius".into()]
            }
        );
    }

    #[test]
    fn a_stopped_container_has_no_pid() {
        let body = json!({"Id": "x", "Name": "/radius", "State": {"Running": false, "Pid": 0}});
        assert_eq!(parse_container(&body).unwrap().pid, 0);
    }

    #[test]
    fn splits_status_and_body() {
        let (status, body) = parse_response(b"HTTP/1.0 404 Not Found\r\nContent-Type: application/json\r\n\r\n{\"message\":\"No such container: nope\"}").unwrap();
        assert_eq!(status, 404);
        assert_eq!(api_message(&body), "No such container: nope");
    }

    #[test]
    fn escapes_path_segments() {
        assert_eq!(encode_path("radius"), "radius");
        assert_eq!(encode_path("../x"), "..%2Fx");
    }
}
