//! A minimal Docker Engine API client over the unix socket: a few GET endpoints (version,
//! container list, container and network inspection), on the API version it negotiated with
//! the engine (`GET /version`), as Docker's own clients do. It speaks HTTP/1.0 (no chunking, the server closes the
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

use crate::model::IpProto;

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
    /// Its network namespace's file under Docker's exec root (`SandboxKey`): the overlay
    /// networks' namespaces live beside it.
    pub sandbox: Option<PathBuf>,
    /// (network name, network id) of each network it is attached to.
    pub endpoints: Vec<(String, String)>,
}

/// A Docker network and the containers on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    /// Docker's id (an overlay's namespace is named after its first ten characters).
    pub id: String,
    /// Names of the containers attached to it (running ones on this node: Docker lists no
    /// others; a swarm network's load-balancer endpoint is no container and is left out).
    pub containers: Vec<String>,
}

/// A `-p HOST:CONTAINER/PROTO` mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedPort {
    pub container_port: u16,
    pub protocol: IpProto,
    pub host_port: u16,
}

/// A port a swarm service publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub port: PublishedPort,
    /// Published through the routing mesh (IPVS in the `ingress_sbox` namespace), not on the
    /// task's node only.
    pub mesh: bool,
}

/// The API versions this client speaks: every endpoint and field it reads exists in both and
/// in between (addresses only from `NetworkSettings.Networks`, which 1.44 kept).
pub const OLDEST_API: ApiVersion = ApiVersion(1, 24);
pub const NEWEST_API: ApiVersion = ApiVersion(1, 51);

/// A Docker Engine API version, `1.41` say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u32, pub u32);

impl std::str::FromStr for ApiVersion {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (major, minor) = s
            .split_once('.')
            .ok_or_else(|| anyhow!("not an API version: {s}"))?;
        Ok(Self(major.parse()?, minor.parse()?))
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

/// The version to speak with an engine that speaks `engine_min..=engine_max` (from its
/// `/version`): the newest both know, or a one-line error naming both ranges.
pub fn negotiate(engine_min: ApiVersion, engine_max: ApiVersion) -> Result<ApiVersion> {
    let version = engine_max.min(NEWEST_API);
    if version < OLDEST_API || version < engine_min {
        bail!(
            "the Docker engine speaks API {engine_min} to {engine_max}, dockflow speaks {OLDEST_API} to {NEWEST_API}: {}",
            if engine_max < OLDEST_API {
                "upgrade Docker"
            } else {
                "upgrade dockflow"
            }
        );
    }
    Ok(version)
}

pub struct Docker {
    socket: PathBuf,
    /// Negotiated on first use (`/vX.Y` before every path).
    version: std::sync::OnceLock<ApiVersion>,
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
        Ok(Self {
            socket,
            version: std::sync::OnceLock::new(),
        })
    }

    /// The API version both sides speak, asked of the engine once.
    pub fn api_version(&self) -> Result<ApiVersion> {
        if let Some(version) = self.version.get() {
            return Ok(*version);
        }
        let (status, body) = self.request("/version")?;
        if status != 200 {
            bail!("Docker did not say its version: {}", api_message(&body));
        }
        let field = |name: &str| -> Result<ApiVersion> {
            body[name]
                .as_str()
                .ok_or_else(|| anyhow!("Docker's /version has no {name}"))?
                .parse()
        };
        // Engines before 1.25 do not say their minimum: they speak everything up to theirs.
        let max = field("ApiVersion")?;
        let min = field("MinAPIVersion").unwrap_or(ApiVersion(1, 12));
        let version = negotiate(min, max)?;
        Ok(*self.version.get_or_init(|| version))
    }

    pub fn container(&self, name: &str) -> Result<Container> {
        let body = self.inspect(
            &format!("/containers/{}/json", encode_path(name)),
            ("no such container", "container"),
            name,
        )?;
        let container = parse_container(&body)?;
        if container.pid == 0 {
            bail!("container {name} is not running");
        }
        Ok(container)
    }

    pub fn network(&self, name: &str) -> Result<Network> {
        let body = self.inspect(
            &format!("/networks/{}", encode_path(name)),
            ("no such Docker network", "network"),
            name,
        )?;
        Ok(parse_network(&body))
    }

    /// The running tasks of swarm service `service` on this node, by container name.
    pub fn service_tasks(&self, service: &str) -> Result<Vec<String>> {
        let filter = format!(r#"{{"label":["{SERVICE_LABEL}={service}"]}}"#);
        let (status, body) = self.get(&format!(
            "/containers/json?filters={}",
            encode_query(&filter)
        ))?;
        if status != 200 {
            bail!("Docker could not list containers: {}", api_message(&body));
        }
        let mut names: Vec<String> = body
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["Names"][0].as_str())
            .map(|n| n.trim_start_matches('/').to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The ports swarm service `service` publishes through the routing mesh (ingress mode)
    /// and on each node directly (host mode).
    pub fn service_ports(&self, service: &str) -> Result<Vec<ServicePort>> {
        let body = self.inspect(
            &format!("/services/{}", encode_path(service)),
            ("no such swarm service", "service"),
            service,
        )?;
        Ok(parse_service_ports(&body))
    }

    /// The engine's name (its host's name) and, when it is in a swarm, its address there.
    pub fn node(&self) -> Result<(String, Option<IpAddr>)> {
        let (status, body) = self.get("/info")?;
        if status != 200 {
            bail!("Docker could not say who it is: {}", api_message(&body));
        }
        let name = body["Name"].as_str().unwrap_or_default().to_string();
        let address = body["Swarm"]["NodeAddr"]
            .as_str()
            .and_then(|a| a.parse().ok());
        Ok((name, address))
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

    /// One object's inspection at `path`: its body, or a one-line error naming `name` (`missing`
    /// when Docker has no such object, else why Docker could not inspect the `what`).
    fn inspect(&self, path: &str, (missing, what): (&str, &str), name: &str) -> Result<Value> {
        let (status, body) = self.get(path)?;
        match status {
            200 => Ok(body),
            404 => bail!("{missing}: {name}"),
            _ => bail!(
                "Docker could not inspect {what} {name}: {}",
                api_message(&body)
            ),
        }
    }

    fn get(&self, path: &str) -> Result<(u16, Value)> {
        let version = self.api_version()?;
        self.request(&format!("/v{version}{path}"))
    }

    fn request(&self, path: &str) -> Result<(u16, Value)> {
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

/// The label Docker gives a swarm task's container: its service's name.
const SERVICE_LABEL: &str = "com.docker.swarm.service.name";

/// A query string value, percent-encoded.
fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
        // "lb-NETWORK": a swarm network's load-balancer sandbox, not a container.
        .flat_map(|c| c.iter().filter(|(key, _)| !key.starts_with("lb-")))
        .filter_map(|(_, c)| c["Name"].as_str().map(str::to_string))
        .collect();
    containers.sort();
    Network {
        name: body["Name"].as_str().unwrap_or_default().to_string(),
        id: body["Id"].as_str().unwrap_or_default().to_string(),
        containers,
    }
}

fn parse_service_ports(body: &Value) -> Vec<ServicePort> {
    body["Endpoint"]["Ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(ServicePort {
                port: PublishedPort {
                    container_port: p["TargetPort"].as_u64()? as u16,
                    protocol: IpProto::from_name(p["Protocol"].as_str()?)?,
                    host_port: p["PublishedPort"].as_u64()? as u16,
                },
                mesh: p["PublishMode"].as_str() != Some("host"),
            })
        })
        .collect()
}

fn parse_container(body: &Value) -> Result<Container> {
    let networks = body["NetworkSettings"]["Networks"].as_object();
    let network_names = networks
        .into_iter()
        .flat_map(|n| n.keys().cloned())
        .collect();
    let endpoints = networks
        .into_iter()
        .flatten()
        .filter_map(|(name, ep)| Some((name.clone(), ep["NetworkID"].as_str()?.to_string())))
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
                        // Docker publishes tcp, udp and sctp: no other to follow.
                        protocol: IpProto::from_name(protocol)?,
                        host_port: b["HostPort"].as_str()?.parse().ok()?,
                    })
                })
        })
        .collect();
    published.sort_by_key(|p| (p.host_port, p.protocol));
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
        sandbox: body["NetworkSettings"]["SandboxKey"]
            .as_str()
            .filter(|key| !key.is_empty())
            .map(PathBuf::from),
        endpoints,
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
        assert_eq!(c.endpoints, [("infranet".into(), "7ed8face".into())]);
        assert_eq!(c.addresses, ["172.20.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            c.published,
            vec![PublishedPort {
                container_port: 1812,
                protocol: IpProto::UDP,
                host_port: 1812
            }]
        );
    }

    #[test]
    fn lists_a_networks_containers_by_name() {
        let body = json!({
            "Name": "infranet",
            "Id": "8d1c0f2e9a7b",
            "Containers": {
                "7249": {"Name": "radius", "IPv4Address": "172.20.0.2/16"},
                "81aa": {"Name": "proxy", "IPv4Address": "172.20.0.5/16"},
                "lb-infranet": {"Name": "infranet-endpoint", "IPv4Address": "172.20.0.9/16"}
            }
        });
        assert_eq!(
            parse_network(&body),
            Network {
                name: "infranet".into(),
                id: "8d1c0f2e9a7b".into(),
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
    fn negotiates_the_newest_version_both_speak() {
        let v = |s: &str| s.parse::<ApiVersion>().unwrap();
        // Docker 20.10 and 28.5: their own newest.
        assert_eq!(negotiate(v("1.12"), v("1.41")).unwrap(), v("1.41"));
        assert_eq!(negotiate(v("1.24"), v("1.51")).unwrap(), v("1.51"));
        // A newer engine that still speaks ours.
        assert_eq!(negotiate(v("1.44"), v("1.53")).unwrap(), NEWEST_API);
        let old = negotiate(v("1.12"), v("1.23")).unwrap_err().to_string();
        assert!(
            old.contains("1.12 to 1.23") && old.contains("1.24 to 1.51"),
            "{old}"
        );
        assert!(old.ends_with("upgrade Docker"), "{old}");
        let new = negotiate(v("1.52"), v("1.60")).unwrap_err().to_string();
        assert!(new.ends_with("upgrade dockflow"), "{new}");
        assert!(v("1.9") < v("1.10"), "compared as numbers");
    }

    #[test]
    fn reads_a_services_published_ports_and_how() {
        let body = json!({"Endpoint": {"Ports": [
            {"Protocol": "udp", "TargetPort": 7300, "PublishedPort": 30777, "PublishMode": "ingress"},
            {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8088, "PublishMode": "host"}
        ]}});
        let ports = parse_service_ports(&body);
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (
                ports[0].port.host_port,
                ports[0].port.container_port,
                ports[0].mesh
            ),
            (30777, 7300, true)
        );
        assert_eq!(ports[1].port.protocol, IpProto::TCP);
        assert!(!ports[1].mesh);
    }

    #[test]
    fn encodes_a_label_filter_for_the_query_string() {
        assert_eq!(
            encode_query(r#"{"label":["a.b=c d"]}"#),
            "%7B%22label%22%3A%5B%22a.b%3Dc%20d%22%5D%7D"
        );
    }

    #[test]
    fn escapes_path_segments() {
        assert_eq!(encode_path("radius"), "radius");
        assert_eq!(encode_path("../x"), "..%2Fx");
    }
}
