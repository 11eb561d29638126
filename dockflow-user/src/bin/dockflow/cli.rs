//! The command line: what to watch or replay, how to show it, and the limits that keep a busy
//! host's trace within bounds.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use anyhow::Result;
use clap::Parser;
use dockflow::{
    filter::{Filter, FilterError},
    model::topology::Topology,
    nftrace::TraceRules,
    output::{Mode, Output},
    path::correlate::Limits,
    pcapng::{PcapngWriter, Section},
    probes::Family,
    record::Origin,
    render::Style,
    write_behind::WriteBehind,
};
use dockflow_common::MAX_SNAPLEN;

/// Show where a Docker container's packets go, hop by hop, live: which hops the bridge (L2)
/// handles and which the IP stack (L3), NAT rewrites, conntrack state, drops with their reason,
/// and a plain-language account of each connection's request and reply.
/// What dockflow can do besides following live or replaying one recording.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Subcommand {
    /// Merge the recordings of several nodes (one dockflow per node, each with --record):
    /// a packet that crossed nodes over an overlay network is shown once, hop by hop on each
    /// node in turn, the nodes' clocks aligned by the packets they saw cross.
    Merge {
        /// The recordings, one per node.
        #[arg(required = true, num_args = 2..)]
        recordings: Vec<PathBuf>,
    },
}

#[derive(Parser, Debug)]
#[command(
    name = "dockflow",
    version,
    after_help = "Examples:
  dockflow --container radius                  follow a container's packets, explained
  dockflow --container radius --raw            one line per probe event instead
  dockflow --container radius --json           one JSON object per packet/explanation
  dockflow --container radius --record r.dfl   also write the events to a file
  dockflow --replay r.dfl                      show a recording again (no root needed)
  dockflow merge a.dfl b.dfl                   one packet's way across nodes, from each node's recording
  dockflow --service web                       follow a swarm service's tasks on this node
  dockflow --netns dockflow-ext                follow a network namespace's packets
  dockflow --iface docker1 --duration 10       watch host interfaces, no container

Layers: L2 = the bridge, L3 = the host's IP stack, L3* = an IP netfilter hook that
br_netfilter runs for a frame still inside the bridge, dev = a device receives/sends."
)]
pub struct Cli {
    /// Container (name or id) whose traffic to follow; give it more than once for several.
    #[arg(long, group = "target", action = clap::ArgAction::Append)]
    pub container: Vec<String>,
    /// Docker network whose containers to follow, all of them (kept current as containers
    /// join, leave and restart).
    #[arg(long, group = "target")]
    pub network: Option<String>,
    /// Swarm service whose tasks on this node to follow, all of them (kept current as tasks
    /// come and go). A task on an overlay network is followed into the overlay's namespace:
    /// its bridge and VXLAN device.
    #[arg(long, group = "target")]
    pub service: Option<String>,
    /// Show only packets this expression matches, in pcap-filter's words (as for tcpdump):
    /// host, net, port, portrange (each with src or dst), tcp, udp, icmp, icmp6, arp, ip,
    /// ip6, and, or, not, parentheses. A packet matches when any of its forms does: its headers
    /// at every hop, before or after NAT, and its conntrack tuples; so `udp port 1812` also
    /// matches a reply whose source port the reverse NAT rewrote. The first packets of each
    /// connection are decided here; once its NAT is fixed, the verdict goes to the kernel,
    /// which drops the events of a left-out connection's later packets itself.
    #[arg(
        value_name = "FILTER",
        trailing_var_arg = true,
        allow_hyphen_values = false
    )]
    pub filter: Vec<String>,
    /// Network namespace (name under /run/netns, or a path like /proc/PID/ns/net) whose
    /// traffic to follow, for targets outside Docker.
    #[arg(long, group = "target")]
    pub netns: Option<String>,
    /// Host interface(s) to watch instead of a container.
    #[arg(long, num_args = 1.., group = "target")]
    pub iface: Vec<String>,
    /// Show a recording made with --record instead of tracing. Several recordings, one per
    /// node of a cluster, are merged: a packet that crossed nodes over an overlay network is
    /// shown once, its hops on each node in turn (as `dockflow merge`).
    #[arg(long, group = "target", num_args = 1.., conflicts_with_all = ["record", "probes", "duration", "debug_kernel", "snaplen"])]
    pub replay: Vec<PathBuf>,
    /// The name this node goes by in recordings, for merging those of several nodes
    /// (default: the Docker engine's name and swarm address).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// JSON lines instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// One line per probe event instead of one block per packet.
    #[arg(long)]
    pub raw: bool,
    /// Stop after this many packets (events with --raw).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after this many seconds (a positive number, fractions allowed).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Probe families to attach (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tc,netfilter,drops,devices,bridge,nftables"
    )]
    pub probes: Vec<Family>,
    /// Which packets nftables traces, to name the rules that judged them. Tracing makes the
    /// kernel build a netlink message for every rule evaluated for every packet traced: `all`
    /// pays that for every packet of a busy followed flow (on one test VM two thirds of its
    /// throughput, on another little next to the events themselves); `first` (the default)
    /// traces each flow's first packet per direction, TCP's SYN, FIN and RST, one sample a
    /// second, and every packet of other protocols, and says of the others whose rules they
    /// share ("rules as packet N"); a later packet's drop is shown with its reason, its rule
    /// named only if traced; it costs every packet a set lookup in each of the table's chains
    /// (a busy followed flow kept 0.86 to 0.96 of the throughput that attaching the programs
    /// alone leaves, in this project's benches); `none` adds no table and names no rules, at no
    /// cost.
    #[arg(long, value_enum, default_value_t = TraceRules::First)]
    pub trace_rules: TraceRules,
    /// Also write every event to this file (see --replay).
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Also write what is shown to this pcapng file, for Wireshark and tshark: one frame per
    /// hop with the bytes captured there (--snaplen) and the hop line as its comment. With
    /// --replay, converts the recording.
    #[arg(long, conflicts_with = "raw")]
    pub pcapng: Option<PathBuf>,
    /// Bytes of each packet captured at every hop, from its MAC header (0: none, at most 256),
    /// for --pcapng and --record files (without either, none are captured).
    #[arg(
        long,
        default_value = "128",
        value_parser = clap::value_parser!(u32).range(0..=MAX_SNAPLEN as i64)
    )]
    pub snaplen: u32,
    /// At exit, write a picture of each connection's path to this SVG file: lanes for the host's
    /// links, its IP stack, the bridge and the containers, the request and the reply as two
    /// coloured paths, NAT rewrites and deciding rules beside their hops.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// At exit, the same pictures in one HTML page, each beside its connection's explanation,
    /// with the hop lists folded underneath (no outside files: it opens offline).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// With --svg or --html, draw only this connection (its number in the stream).
    #[arg(long)]
    pub connection: Option<u64>,
    /// At exit, a table of the connections seen: client, server, service, the way the request
    /// went (bridged only, routed with DNAT, masqueraded out, delivered to the host, dropped),
    /// packets each way; every few seconds too while stderr is a terminal.
    #[arg(long)]
    pub summary: bool,
    /// Print nothing but the summary; with --record (and no --pcapng), events go to the file
    /// undecoded (the fastest way to capture a busy target).
    #[arg(long, short)]
    pub quiet: bool,
    /// Size of the kernel's event ring buffer in MiB, or KiB with a K suffix (a power of two).
    /// The default holds about 100 ms of events at 2 million events/s, so a busy moment does
    /// not overflow it.
    #[arg(long, default_value = "64", allow_negative_numbers = true, value_parser = parse_ring_size)]
    pub ring_size: u32,
    /// Show the first N packets of each connection in full; after that one packet a second
    /// (marked "sample"), every TCP SYN, FIN or RST and every drop, and only count the rest.
    /// Decided in the kernel, so following a busy connection costs little once it was shown
    /// (every packet in full cost a bulk flow 60% of its throughput on a 2-vCPU VM). `all`:
    /// every packet.
    #[arg(
        long,
        default_value = "64",
        allow_negative_numbers = true,
        value_parser = parse_packet_limit
    )]
    pub per_connection: PacketLimit,
    /// Benchmarks only: attach programs that return at once, to measure what attaching alone
    /// costs (the floor every other figure is judged against). Shows nothing.
    #[arg(long, hide = true)]
    pub empty_programs: bool,
    /// Packaging only: print the man page or a shell's completions and exit.
    #[arg(long, hide = true, value_enum)]
    pub generate: Option<Generated>,
    /// Packets followed at once; past this the oldest is shown early (and counted). Each holds
    /// a few KiB while open.
    #[arg(
        long,
        default_value = "16384",
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_open_packets: u64,
    /// Print the kernel programs' own diagnostics on stderr: why the filter kept or skipped
    /// each frame at tc. Costs nothing when off.
    #[arg(long)]
    pub debug_kernel: bool,
    /// Connections remembered to pair requests with replies; past this the oldest is
    /// forgotten (and counted).
    #[arg(
        long,
        default_value = "65536",
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub max_connections: u64,
}

impl Cli {
    /// The probe families to attach: --probes, less the nftables trace with --trace-rules none.
    pub fn families(&self) -> Vec<Family> {
        self.probes
            .iter()
            .copied()
            .filter(|f| *f != Family::Nftables || self.trace_rules != TraceRules::None)
            .collect()
    }

    /// --per-connection as it applies: with nftables' trace as the only probe there are no
    /// kernel events to hold back, and every traced packet is shown.
    pub fn per_connection(&self) -> Option<u32> {
        let packet_probes = self.families().iter().any(|f| *f != Family::Nftables);
        self.per_connection.0.filter(|_| packet_probes)
    }

    /// The memory limits, and the packets per connection the kernel showed in full (live:
    /// --per-connection; replay: the recording's).
    pub fn limits(&self, per_connection: Option<u32>) -> Limits {
        Limits {
            open_packets: self.max_open_packets as usize,
            connections: self.max_connections as usize,
            per_connection,
        }
    }

    /// The consuming end: standard output, or nothing with --quiet (which still decodes when
    /// --pcapng needs the packets).
    pub fn output(
        &self,
        topology: Topology,
        filter: Option<Filter>,
        per_connection: Option<u32>,
    ) -> Output<Box<dyn Write>> {
        let writer: Box<dyn Write> = if self.quiet {
            Box::new(std::io::sink())
        } else {
            Box::new(std::io::BufWriter::with_capacity(
                1 << 16,
                std::io::stdout().lock(),
            ))
        };
        Output::with_limits(
            mode(self),
            self.json,
            Style::for_stdout(),
            topology,
            writer,
            self.limits(per_connection),
        )
        .with_stream(!self.quiet)
        .with_render_threads(render_threads())
        .with_filter(filter)
        .with_summary(self.summary)
        .with_drawing(self.svg.is_some() || self.html.is_some())
    }

    /// The filter expression as given (None: none).
    pub fn filter_text(&self) -> Option<String> {
        (!self.filter.is_empty()).then(|| self.filter.join(" "))
    }

    /// The filter expression, if one was given.
    pub fn filter(&self) -> Result<Option<Filter>, FilterError> {
        if self.filter.is_empty() {
            return Ok(None);
        }
        Filter::parse(&self.filter.join(" ")).map(Some)
    }

    /// The --pcapng file, created with `origin`'s section header.
    pub fn pcapng(
        &self,
        target: &str,
        origin: &Origin,
    ) -> Result<Option<PcapngWriter<WriteBehind>>> {
        let Some(path) = &self.pcapng else {
            return Ok(None);
        };
        let section = Section {
            target: target.to_string(),
            networks: origin.networks.clone(),
            kernel: origin.kernel.clone(),
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(origin.started_unix_s),
            filter: origin.filter.clone(),
        };
        PcapngWriter::create(path, &section, origin.snaplen, origin.clock_offset_ns).map(Some)
    }
}

/// --ring-size: MiB, or KiB with a K suffix ("256K"); a power of two from 4 KiB (a page) to
/// 1 GiB. Returned in bytes.
/// What `--generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Generated {
    Man,
    Bash,
    Zsh,
    Fish,
}

impl Generated {
    /// Writes the man page or the completions for this command line to `out`.
    pub fn write(self, out: &mut dyn Write) -> std::io::Result<()> {
        use clap::CommandFactory as _;
        let mut command = Cli::command();
        let shell = match self {
            Generated::Man => return clap_mangen::Man::new(command).render(out),
            Generated::Bash => clap_complete::Shell::Bash,
            Generated::Zsh => clap_complete::Shell::Zsh,
            Generated::Fish => clap_complete::Shell::Fish,
        };
        clap_complete::generate(shell, &mut command, "dockflow", out);
        Ok(())
    }
}

/// --per-connection: a number of packets, or none (`all`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketLimit(pub Option<u32>);

fn parse_packet_limit(text: &str) -> Result<PacketLimit, String> {
    if text == "all" {
        return Ok(PacketLimit(None));
    }
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(PacketLimit(Some(n))),
        _ => Err(format!(
            "{text:?} is not a number of packets from 1 (or `all`)"
        )),
    }
}

fn parse_ring_size(text: &str) -> Result<u32, String> {
    let (number, unit) = match text.strip_suffix(['K', 'k']) {
        Some(kib) => (kib, 10),
        None => (text.strip_suffix(['M', 'm']).unwrap_or(text), 20),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_shl(unit))
        .ok_or_else(|| format!("{text:?} is not a size in MiB (or KiB with a K suffix)"))?;
    if !bytes.is_power_of_two() || !(4096..=1 << 30).contains(&bytes) {
        return Err(format!(
            "{text}: the ring buffer size must be a power of two from 4K to 1024 (MiB)"
        ));
    }
    Ok(bytes as u32)
}

/// Seconds for --duration: finite, positive and at most a year (clap reports anything else in
/// one line, exit status 2).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > MAX_SECONDS {
        return Err(format!(
            "{text} is not a duration dockflow can wait (more than 0, at most {MAX_SECONDS} seconds)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn mode(cli: &Cli) -> Mode {
    match (cli.quiet, cli.raw) {
        // Files made from the packets (capture, pictures) need them decoded.
        (true, _) if cli.pcapng.is_none() && cli.svg.is_none() && cli.html.is_none() => Mode::Quiet,
        (_, true) => Mode::Raw,
        _ => Mode::Paths,
    }
}

/// The --summary table on stderr, if asked for and anything was seen.
pub fn print_summary(output: &Output<impl Write>) {
    if let Some(summary) = output.summary().filter(|s| !s.is_empty()) {
        eprint!("{}", dockflow::render::summary::table(summary));
    }
}

/// Writes the --svg and --html pictures, if asked for.
pub fn write_svg(cli: &Cli, output: &Output<impl Write>) -> Result<()> {
    let pictures = [
        (&cli.svg, output.svg(cli.connection)),
        (&cli.html, output.html(cli.connection)),
    ];
    for (path, text) in pictures {
        if let (Some(path), Some(text)) = (path, text) {
            dockflow::record::create_private(path)?.write_all(text.as_bytes())?;
            eprintln!("dockflow: wrote {}", path.display());
        }
    }
    Ok(())
}

/// Whether --count is reached (packets, or events with --raw).
pub fn reached_count(cli: &Cli, output: &Output<impl Write>) -> bool {
    let seen = if cli.raw {
        output.stats.events
    } else {
        output.stats.packets
    };
    cli.count.is_some_and(|n| seen >= n)
}

/// What the filter left out and what the memory limits cost, if anything.
pub fn report_evictions(output: &Output<impl Write>, cli: &Cli) {
    if output.stats.filtered_out > 0 {
        eprintln!(
            "dockflow: {} {} left out by the filter",
            output.stats.filtered_out,
            if cli.raw { "events" } else { "packets" }
        );
    }
    let evicted = output.evictions();
    if evicted.packets > 0 {
        eprintln!(
            "dockflow: {} packets shown before they were complete (more than --max-open-packets {} open at once)",
            evicted.packets, cli.max_open_packets
        );
    }
    if evicted.connections > 0 {
        eprintln!(
            "dockflow: {} connections forgotten (more than --max-connections {}); their later packets start new ones",
            evicted.connections, cli.max_connections
        );
    }
}

/// Threads that render the stream and the capture file beside the one that correlates: one
/// per core, up to four (past that the correlating thread is the bottleneck).
fn render_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
