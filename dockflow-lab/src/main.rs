//! `dockflow-lab`: the lab's servers (inside containers) and clients (in the external namespace).

use std::net::SocketAddr;

use anyhow::Result;
use clap::{Parser, Subcommand};
use dockflow_lab::responder::{self, RadiusConfig};

#[derive(Parser)]
#[command(about = "Servers and clients of the dockflow lab")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a server (the containers' entrypoint).
    Serve {
        #[command(subcommand)]
        service: Service,
    },
    /// Send one request and print the reply.
    Client {
        #[command(subcommand)]
        service: ClientService,
    },
}

#[derive(Subcommand)]
enum Service {
    /// RADIUS authentication server (Access-Request -> Access-Accept/Reject).
    Radius {
        #[arg(long, default_value_t = 1812)]
        port: u16,
        #[command(flatten)]
        radius: RadiusArgs,
    },
    /// UDP echo.
    UdpEcho {
        #[arg(long)]
        port: u16,
    },
    /// TCP line echo.
    TcpEcho {
        #[arg(long)]
        port: u16,
    },
}

#[derive(Subcommand)]
enum ClientService {
    Radius {
        server: SocketAddr,
        #[command(flatten)]
        radius: RadiusArgs,
    },
    Udp {
        server: SocketAddr,
        #[arg(long, default_value = "hello from dockflow-lab")]
        message: String,
    },
    Tcp {
        server: SocketAddr,
        #[arg(long, default_value = "hello from dockflow-lab")]
        message: String,
    },
    /// One ICMP echo request (raw socket, root).
    Ping { target: std::net::Ipv4Addr },
    /// Bulk TCP to a tcp-echo server's sink; prints the goodput in bit/s.
    TcpBulk {
        server: SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Small UDP datagrams at a rate (0: as fast as possible); prints how many were sent.
    UdpFlood {
        server: SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Client sockets to send from in turn: each is a connection of its own.
        #[arg(long, default_value_t = 1)]
        sockets: usize,
        /// Then wait until every datagram's echo is back (3 s without one end the wait):
        /// prints "SENT sent, ECHOED echoed".
        #[arg(long)]
        await_echoes: bool,
    },
}

#[derive(clap::Args)]
struct RadiusArgs {
    #[arg(long, default_value = dockflow_lab::lab::RADIUS_SECRET)]
    secret: String,
    #[arg(long, default_value = dockflow_lab::lab::RADIUS_USER)]
    user: String,
    #[arg(long, default_value = dockflow_lab::lab::RADIUS_PASSWORD)]
    password: String,
}

impl From<RadiusArgs> for RadiusConfig {
    fn from(a: RadiusArgs) -> Self {
        RadiusConfig {
            secret: a.secret,
            user: a.user,
            password: a.password,
        }
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve { service } => match service {
            Service::Radius { port, radius } => responder::serve_radius(port, &radius.into()),
            Service::UdpEcho { port } => responder::serve_udp_echo(port),
            Service::TcpEcho { port } => responder::serve_tcp_echo(port),
        },
        Command::Client { service } => {
            let line = match service {
                ClientService::Radius { server, radius } => {
                    responder::radius_client(server, &radius.into())?
                }
                ClientService::Udp { server, message } => responder::udp_client(server, &message)?,
                ClientService::Tcp { server, message } => responder::tcp_client(server, &message)?,
                ClientService::Ping { target } => dockflow_lab::ping::ping(target)?,
                ClientService::TcpBulk { server, seconds } => {
                    responder::tcp_bulk_client(server, seconds)?.to_string()
                }
                ClientService::UdpFlood {
                    server,
                    seconds,
                    rate,
                    sockets,
                    await_echoes,
                } => {
                    let (sent, sockets) =
                        responder::udp_flood_client(server, seconds, rate, sockets)?;
                    if await_echoes {
                        let echoed = responder::await_echoes(server, &sockets, sent)?;
                        format!("{sent} sent, {echoed} echoed")
                    } else {
                        sent.to_string()
                    }
                }
            };
            println!("{line}");
            Ok(())
        }
    }
}
