//! The programs that run inside the lab's containers (servers) and in the external namespace
//! (clients). Plain std sockets: the binary is linked statically into an image with nothing else.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::radius;

/// Credentials the lab's RADIUS server accepts, and its shared secret.
#[derive(Clone, Debug)]
pub struct RadiusConfig {
    pub secret: String,
    pub user: String,
    pub password: String,
}

pub fn serve_radius(port: u16, config: &RadiusConfig) -> Result<()> {
    let socket =
        UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("binding udp/{port}"))?;
    eprintln!("radius: listening on udp/{port}");
    let mut buf = [0u8; 4096];
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        let reply = radius::Packet::decode(&buf[..n]).and_then(|req| {
            radius::answer(
                &req,
                config.secret.as_bytes(),
                &config.user,
                &config.password,
            )
        });
        match reply {
            Ok(reply) => {
                socket.send_to(&reply.encode(), peer)?;
                eprintln!("radius: {} to {peer}", code_name(reply.code));
            }
            Err(e) => eprintln!("radius: ignored a packet from {peer}: {e}"),
        }
    }
}

pub fn serve_udp_echo(port: u16) -> Result<()> {
    // Dual-stack where the host has IPv6 (Linux maps IPv4 peers into it), IPv4 otherwise.
    let socket = UdpSocket::bind(("::", port))
        .or_else(|_| UdpSocket::bind(("0.0.0.0", port)))
        .with_context(|| format!("binding udp/{port}"))?;
    eprintln!("echo: listening on udp/{port}");
    let mut buf = [0u8; 65536];
    loop {
        let (n, peer) = socket.recv_from(&mut buf)?;
        socket.send_to(&buf[..n], peer)?;
    }
}

/// First line a client sends to turn an echo connection into a bulk sink (for benchmarks).
const SINK_COMMAND: &[u8] = b"SINK";

/// Echoes each line back; a connection that starts with `SINK` is drained instead, and the
/// byte count is sent back when the client closes its side.
pub fn serve_tcp_echo(port: u16) -> Result<()> {
    let listener =
        TcpListener::bind(("0.0.0.0", port)).with_context(|| format!("binding tcp/{port}"))?;
    eprintln!("echo: listening on tcp/{port}");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            let mut writer = stream.try_clone()?;
            let mut reader = BufReader::new(stream);
            let mut first = Vec::new();
            reader.read_until(b'\n', &mut first)?;
            if first.strip_suffix(b"\n") == Some(SINK_COMMAND) {
                let received = std::io::copy(&mut reader, &mut std::io::sink())?;
                writeln!(writer, "{received}")?;
                return anyhow::Ok(());
            }
            writer.write_all(&first)?;
            for line in reader.split(b'\n') {
                let mut line = line?;
                line.push(b'\n');
                writer.write_all(&line)?;
            }
            anyhow::Ok(())
        });
    }
    Ok(())
}

/// Streams to a sink for `seconds` and returns the goodput the server confirmed, in bit/s.
pub fn tcp_bulk_client(server: SocketAddr, seconds: f64) -> Result<f64> {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(3))
        .with_context(|| format!("connecting to {server}"))?;
    stream.write_all(SINK_COMMAND)?;
    stream.write_all(b"\n")?;
    let chunk = vec![0x5au8; 256 * 1024];
    let started = std::time::Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        stream.write_all(&chunk)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let elapsed = started.elapsed().as_secs_f64();
    let received: u64 = line
        .trim()
        .parse()
        .with_context(|| format!("sink answered {line:?}"))?;
    Ok(received as f64 * 8.0 / elapsed)
}

/// Sends datagrams to `server` for `seconds` at `rate` per second (0: as fast as it can), from
/// `sockets` sockets in turn; returns how many were sent.
pub fn udp_flood_client(
    server: SocketAddr,
    seconds: f64,
    rate: u64,
    sockets: usize,
) -> Result<(u64, Vec<UdpSocket>)> {
    let sockets = (0..sockets.max(1))
        .map(|_| client_udp_socket(server))
        .collect::<Result<Vec<_>>>()?;
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        if rate > 0 {
            // Pace in 1 ms steps: send what the schedule says is due, then sleep.
            let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
            if sent >= due {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        }
        let socket = &sockets[sent as usize % sockets.len()];
        if socket.send_to(b"dockflow-flood", server).is_ok() {
            sent += 1;
        }
    }
    Ok((sent, sockets))
}

/// How long [`await_echoes`] waits for the last echo at most.
const ECHO_WAIT: Duration = Duration::from_secs(3);

/// Receives echoes on `sockets` until `sent` have come back (or none came for [`ECHO_WAIT`]):
/// when it returns, the server has answered everything it got. Returns how many came back.
pub fn await_echoes(server: SocketAddr, sockets: &[UdpSocket], sent: u64) -> Result<u64> {
    let mut echoed = 0;
    let mut buf = [0u8; 2048];
    let mut last = std::time::Instant::now();
    while echoed < sent && last.elapsed() < ECHO_WAIT {
        let mut any = false;
        for socket in sockets {
            socket.set_read_timeout(Some(Duration::from_millis(10)))?;
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                if from == server {
                    echoed += 1;
                    any = true;
                }
            }
        }
        if any {
            last = std::time::Instant::now();
        }
    }
    Ok(echoed)
}

/// Sends one Access-Request and returns a one-line account of the verified reply.
pub fn radius_client(server: SocketAddr, config: &RadiusConfig) -> Result<String> {
    let socket = client_udp_socket(server)?;
    let authenticator = random_bytes()?;
    let request = radius::access_request(
        authenticator[0],
        authenticator,
        &config.user,
        &config.password,
        config.secret.as_bytes(),
    );
    socket.send_to(&request.encode(), server)?;
    let mut buf = [0u8; 4096];
    let (n, from) = socket
        .recv_from(&mut buf)
        .with_context(|| format!("no RADIUS reply from {server} within 3 s"))?;
    let reply = radius::Packet::decode(&buf[..n])?;
    radius::verify_reply(&reply, &request, config.secret.as_bytes())?;
    let message = reply
        .attribute(radius::REPLY_MESSAGE)
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    Ok(format!(
        "{} from {from} (id {}, user {}): {message}",
        code_name(reply.code),
        reply.identifier,
        config.user
    ))
}

pub fn udp_client(server: SocketAddr, message: &str) -> Result<String> {
    let socket = client_udp_socket(server)?;
    socket.send_to(message.as_bytes(), server)?;
    let mut buf = [0u8; 65536];
    let (n, from) = socket
        .recv_from(&mut buf)
        .with_context(|| format!("no UDP reply from {server} within 3 s"))?;
    Ok(format!(
        "echo from {from}: {}",
        String::from_utf8_lossy(&buf[..n])
    ))
}

pub fn tcp_client(server: SocketAddr, message: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(3))
        .with_context(|| format!("connecting to {server}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(format!("{message}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .with_context(|| format!("no TCP reply from {server} within 3 s"))?;
    Ok(format!("echo from {server}: {}", line.trim_end()))
}

fn client_udp_socket(server: SocketAddr) -> Result<UdpSocket> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    Ok(socket)
}

fn random_bytes() -> Result<[u8; 16]> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn code_name(code: u8) -> &'static str {
    match code {
        radius::ACCESS_ACCEPT => "Access-Accept",
        radius::ACCESS_REJECT => "Access-Reject",
        _ => "unexpected RADIUS code",
    }
}
