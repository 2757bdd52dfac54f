//! `inspect-monitor`: the field technician's receiver. Reads the daemon's alerts from a serial
//! port (or a file / standard input), ACKs each one, logs them to JSONL and CSV, and shows a live
//! view with keys to pause the device, change its threshold and fetch evidence. When standard
//! output is not a terminal it prints one plain line per message instead.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use inspect_monitor::{AlertLog, Decoder, Event, Framing, Session};
use inspect_protocol::command::Part;
use inspect_protocol::signing::{Direction, LinkKey, Signer};
use inspect_protocol::Command;
use inspect_protocol::DeviceMessage;

/// Receives, acknowledges and logs the alerts of an `inspectd`.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Serial port the daemon's link arrives on (`/dev/ttyUSB0`, `COM3`).
    #[arg(long, conflicts_with = "file")]
    port: Option<String>,
    /// Speed of the serial port.
    #[arg(long, default_value_t = 115200)]
    baud: u32,
    /// Read a recorded stream from this file instead (`-` for standard input); no ACKs.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Framing the daemon uses (its `alerts.framing`).
    #[arg(long, value_enum, default_value_t = FramingArg::Json)]
    framing: FramingArg,
    /// Folder for alerts.jsonl, alerts.csv and evidence/.
    #[arg(long, default_value = "inspect-monitor-log")]
    log_dir: PathBuf,
    /// Do not acknowledge alerts (watch a link someone else acknowledges).
    #[arg(long)]
    no_ack: bool,
    /// Fetch every new alert's tile and heatmap into the log (one transfer at a time), for
    /// `inspect-monitor report`.
    #[arg(long, conflicts_with = "no_ack")]
    fetch_evidence: bool,
    /// Plain line output even on a terminal.
    #[arg(long)]
    lines: bool,
    /// The link key (the daemon's `alerts.key_file`): sign commands, accept only the device's
    /// signed messages.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Link id to sign commands with, 0-255.
    #[arg(long, default_value_t = 2)]
    link_id: u8,
}

/// Other work than receiving.
#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Write the inspection report for the asset owner: one self-contained HTML file (alerts on
    /// a strip of the structure by chainage or a map of GNSS fixes, counts by section, each
    /// alert's tile and heatmap, filters) and a CSV beside it.
    Report {
        /// The monitor's log folder (its --log-dir).
        #[arg(long)]
        log_dir: PathBuf,
        /// The HTML file to write (the CSV gets the same name with .csv).
        #[arg(long)]
        out: PathBuf,
        /// Section length in metres for the counts, 1-100000.
        #[arg(long, default_value_t = 100.0)]
        section_m: f64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FramingArg {
    Json,
    Cobs,
}

/// What the reader thread hands over.
enum Input {
    Bytes(Vec<u8>),
    Closed(String),
}

/// The link: where bytes come from and ACKs go.
struct Link {
    name: String,
    writer: Option<Box<dyn Write + Send>>,
    framing: Framing,
    signer: Option<Signer>,
}

impl Link {
    fn send(&mut self, command: Command) -> bool {
        let Some(w) = &mut self.writer else {
            return false;
        };
        let bytes = match &mut self.signer {
            Some(signer) => command.encode_signed(self.framing, signer, SystemTime::now()),
            None => command.encode(self.framing),
        };
        w.write_all(&bytes).and_then(|()| w.flush()).is_ok()
    }
}

fn open(cli: &Cli, framing: Framing) -> anyhow::Result<(Link, Receiver<Input>)> {
    let (tx, rx) = mpsc::channel();
    let reader: Box<dyn Read + Send> = match (&cli.port, &cli.file) {
        (Some(port), _) => {
            let p = serialport::new(port, cli.baud)
                .timeout(Duration::from_millis(100))
                .open()
                .with_context(|| format!("cannot open serial port {port}"))?;
            let writer = p
                .try_clone()
                .with_context(|| format!("{port}: cannot write to it"))?;
            spawn_reader(Box::new(p), tx);
            let link = Link {
                name: format!("{port} @ {}", cli.baud),
                writer: (!cli.no_ack).then_some(Box::new(writer) as Box<dyn Write + Send>),
                framing,
                signer: None,
            };
            return Ok((link, rx));
        }
        (None, Some(f)) if f.as_os_str() == "-" => Box::new(std::io::stdin()),
        (None, Some(f)) => Box::new(
            std::fs::File::open(f).with_context(|| format!("cannot open {}", f.display()))?,
        ),
        (None, None) => anyhow::bail!("say where the alerts come from: --port PORT or --file FILE"),
    };
    let name = match &cli.file {
        Some(f) if f.as_os_str() == "-" => "standard input".to_string(),
        Some(f) => f.display().to_string(),
        None => String::new(),
    };
    spawn_reader(reader, tx);
    Ok((
        Link {
            name,
            writer: None,
            framing,
            signer: None,
        },
        rx,
    ))
}

fn spawn_reader(mut reader: Box<dyn Read + Send>, tx: Sender<Input>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(Input::Closed("end of input".into()));
                    return;
                }
                Ok(n) => {
                    if tx.send(Input::Bytes(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Input::Closed(e.to_string()));
                    return;
                }
            }
        }
    });
}

/// The ACK of alert `seq` raised by start `boot` (a version 1 device sends no boot id: 0).
fn ack(seq: u64, boot: u64) -> Command {
    Command::Ack {
        seq,
        boot: (boot != 0).then_some(boot),
    }
}

/// The monitor's state besides the session.
struct App {
    session: Session,
    decoder: Decoder,
    log: AlertLog,
    link: Link,
    link_state: String,
    acks: u64,
    selected: Option<usize>,
    paused: bool,
    /// With --fetch-evidence: alerts whose evidence is still to fetch, and the one being
    /// fetched (since when).
    evidence_wanted: Option<std::collections::VecDeque<u64>>,
    evidence_fetching: Option<(u64, Instant)>,
}

impl App {
    /// Takes one message: ACK, log, save; returns a line for the plain output.
    fn take(&mut self, message: &DeviceMessage<'_>) -> Option<String> {
        let event = self.session.on_message(message)?;
        match event {
            Event::Alert(a) => {
                if let Some(wanted) = &mut self.evidence_wanted {
                    wanted.push_back(a.seq);
                }
                if self.link.send(ack(a.seq, a.boot)) {
                    self.acks += 1;
                }
                if let Err(e) = self.log.alert(&a, &self.session) {
                    self.session
                        .notices
                        .push_back(format!("log write failed: {e}"));
                }
                let r = &a.region;
                Some(format!(
                    "ALERT seq={} frame={} tile={} score={:.3} threshold={:.3} region={},{} {}x{} area={:.3} time={}",
                    a.seq, a.frame, a.tile_index, a.score, a.threshold, r.x, r.y, r.width,
                    r.height, a.area_fraction, humantime::format_rfc3339_millis(a.time)
                ))
            }
            Event::Duplicate { seq, boot } => {
                // The daemon did not see our ACK: send it again.
                if self.link.send(ack(seq, boot)) {
                    self.acks += 1;
                }
                None
            }
            Event::Status => {
                let s = self.session.status.as_ref()?;
                self.paused = s.paused;
                Some(format!(
                    "STATUS frames={} tiles/s={:.1} alerts={} unacked={} lost={} dropped_frames={} skipped={} source_failures={} threshold={} refused_commands={}{}",
                    s.frames, s.tiles_per_s, s.alerts, s.unacked, s.dropped_alerts,
                    s.dropped_frames, s.skipped_frames, s.source_failures, s.threshold,
                    s.refused_commands,
                    if self.paused { " paused" } else { "" }
                ))
            }
            Event::Reply { cmd, ok, text } => {
                // A refused request (evicted, busy) ends that transfer.
                if cmd == "get_evidence" && !ok {
                    self.evidence_fetching = None;
                }
                Some(format!("REPLY {text}"))
            }
            Event::Evidence { seq, part, bytes } => {
                if part == Part::Heatmap && self.evidence_fetching.is_some_and(|(s, _)| s == seq) {
                    self.evidence_fetching = None;
                }
                let name = part.name();
                match self.log.evidence(seq, part, &bytes) {
                    Ok(path) => Some(format!(
                        "EVIDENCE alert {seq} {name} saved to {}",
                        path.display()
                    )),
                    Err(e) => Some(format!("EVIDENCE alert {seq} {name} not saved: {e}")),
                }
            }
        }
    }

    /// With --fetch-evidence: asks for the next alert's evidence when none is being fetched
    /// (or the last request went unanswered for 30 s).
    fn fetch_evidence(&mut self) {
        let Some(wanted) = &mut self.evidence_wanted else {
            return;
        };
        if self
            .evidence_fetching
            .is_some_and(|(_, since)| since.elapsed() < Duration::from_secs(30))
        {
            return;
        }
        if let Some(seq) = wanted.pop_front() {
            if self.link.send(Command::GetEvidence { seq }) {
                self.evidence_fetching = Some((seq, Instant::now()));
            }
        }
    }

    fn selected_seq(&self) -> Option<u64> {
        let alerts = &self.session.alerts;
        let i = self.selected.unwrap_or(alerts.len().checked_sub(1)?);
        alerts.get(i).map(|a| a.seq)
    }
}

/// Plain mode: one line per message until the input ends or a signal stops us.
fn run_lines(app: &mut App, rx: &Receiver<Input>) -> anyhow::Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    #[cfg(unix)]
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let mut out = std::io::stdout().lock();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Input::Bytes(b)) => {
                for message in app.decoder.push(&b) {
                    if let Some(line) = app.take(&message) {
                        writeln!(out, "{line}")?;
                    }
                }
                out.flush()?;
            }
            Ok(Input::Closed(why)) => {
                writeln!(out, "LINK closed: {why}")?;
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        app.fetch_evidence();
    }
    let s = &app.session;
    writeln!(
        out,
        "SUMMARY alerts={} duplicates={} gaps={} acks={} garbled={} refused={}",
        s.received,
        s.duplicates,
        s.gaps(),
        app.acks,
        app.decoder.garbled,
        app.decoder.refused
    )?;
    Ok(())
}

mod view {
    //! The live view, drawn with crossterm (Linux, macOS and Windows terminals).

    use std::io::Write;

    use crossterm::style::{Attribute, Print, SetAttribute};
    use crossterm::{cursor::MoveTo, queue, terminal};

    use super::App;

    fn cut(s: String, width: usize) -> String {
        s.chars().take(width).collect()
    }

    /// Draws the whole screen.
    pub fn draw(out: &mut impl Write, app: &App) -> std::io::Result<()> {
        let (w, h) = terminal::size().unwrap_or((100, 30));
        let (w, h) = (w as usize, h as usize);
        let s = &app.session;
        let st = s.status.as_ref();
        let field = |f: fn(&inspect_protocol::Status) -> String| st.map_or("-".into(), f);
        let seq_width = inspect_monitor::seq_column_width(&s.alerts);
        let mut lines: Vec<(bool, String)> = vec![
            (
                true,
                format!(
                    " inspect-monitor   link {} ({})   device {}   model {}",
                    app.link.name,
                    app.link_state,
                    if s.device.is_empty() { "?" } else { &s.device },
                    if s.model.is_empty() { "?" } else { &s.model }
                ),
            ),
            (
                false,
                format!(
                    " frames {}  frames/s {}  tiles/s {}  dropped frames {}  skipped {}  camera failures {}{}",
                    field(|s| s.frames.to_string()),
                    s.frames_per_s.map_or("-".into(), |f| format!("{f:.1}")),
                    field(|s| format!("{:.1}", s.tiles_per_s)),
                    field(|s| s.dropped_frames.to_string()),
                    field(|s| s.skipped_frames.to_string()),
                    field(|s| s.source_failures.to_string()),
                    if app.paused { "   PAUSED" } else { "" }
                ),
            ),
            (
                false,
                format!(
                    " alerts {}  duplicates {}  gaps {}  acked {}  waiting on device {}  lost on device {}",
                    s.received,
                    s.duplicates,
                    s.gaps(),
                    app.acks,
                    field(|s| s.unacked.to_string()),
                    field(|s| s.dropped_alerts.to_string())
                ),
            ),
            (false, format!(" {}", "-".repeat(w.saturating_sub(2)))),
            (
                true,
                format!(
                    "   {:>seq_width$}  {:<24} {:>7} {:>5} {:>8} {:>9}  region (x,y wxh, area)",
                    "seq", "time", "frame", "tile", "score", "threshold"
                ),
            ),
        ];
        let rows = h.saturating_sub(lines.len() + 5);
        let alerts = &s.alerts;
        let sel = app.selected.unwrap_or(alerts.len().saturating_sub(1));
        let first = (sel + 1).saturating_sub(rows);
        for (i, a) in alerts.iter().enumerate().skip(first).take(rows) {
            lines.push((
                i == sel,
                format!(
                    " {} {:>seq_width$}  {:<24} {:>7} {:>5} {:>8.3} {:>9.3}  {},{} {}x{} {:.1}%",
                    if i == sel { ">" } else { " " },
                    a.seq,
                    a.time,
                    a.frame,
                    a.tile,
                    a.score,
                    a.threshold,
                    a.region[0],
                    a.region[1],
                    a.region[2],
                    a.region[3],
                    a.area * 100.0
                ),
            ));
        }
        while lines.len() < h.saturating_sub(3) {
            lines.push((false, String::new()));
        }
        lines.push((false, format!(" {}", "-".repeat(w.saturating_sub(2)))));
        lines.push((
            false,
            format!(" {}", s.notices.back().cloned().unwrap_or_default()),
        ));
        lines.push((
            true,
            " keys: up/down select   e evidence   p pause/resume   + / - threshold   s status   q quit"
                .into(),
        ));
        queue!(out, terminal::Clear(terminal::ClearType::All))?;
        for (row, (bold, text)) in lines.into_iter().take(h).enumerate() {
            queue!(out, MoveTo(0, row as u16))?;
            if bold {
                queue!(out, SetAttribute(Attribute::Reverse))?;
            }
            queue!(out, Print(cut(text, w)))?;
            if bold {
                queue!(out, SetAttribute(Attribute::Reset))?;
            }
        }
        out.flush()
    }
}

/// The live view until `q`.
fn run_view(app: &mut App, rx: &Receiver<Input>) -> anyhow::Result<()> {
    use crossterm::event::{self, Event as Key, KeyCode, KeyEventKind, KeyModifiers};
    use crossterm::{execute, terminal};

    let mut out = std::io::stdout();
    terminal::enable_raw_mode()?;
    execute!(out, terminal::EnterAlternateScreen, crossterm::cursor::Hide)?;
    let result = (|| -> anyhow::Result<()> {
        let mut last_draw = Instant::now() - Duration::from_secs(1);
        loop {
            while let Ok(input) = rx.try_recv() {
                match input {
                    Input::Bytes(b) => {
                        for v in app.decoder.push(&b) {
                            app.take(&v);
                        }
                        app.fetch_evidence();
                    }
                    Input::Closed(why) => app.link_state = format!("closed: {why}"),
                }
            }
            if last_draw.elapsed() >= Duration::from_millis(200) {
                view::draw(&mut out, app)?;
                last_draw = Instant::now();
            }
            if !event::poll(Duration::from_millis(50))? {
                continue;
            }
            let Key::Key(k) = event::read()? else {
                continue;
            };
            if k.kind != KeyEventKind::Press {
                continue;
            }
            let n = app.session.alerts.len();
            let sel = app.selected.unwrap_or(n.saturating_sub(1));
            match k.code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                KeyCode::Up => app.selected = Some(sel.saturating_sub(1)),
                KeyCode::Down if sel + 1 >= n => app.selected = None,
                KeyCode::Down => app.selected = Some(sel + 1),
                KeyCode::Char('e') => {
                    if let Some(seq) = app.selected_seq() {
                        app.link.send(Command::GetEvidence { seq });
                    }
                }
                KeyCode::Char('p') => {
                    let c = if app.paused {
                        Command::Resume
                    } else {
                        Command::Pause
                    };
                    app.link.send(c);
                }
                KeyCode::Char(c @ ('+' | '-')) => {
                    if let Some(t) = app.session.threshold() {
                        let f = if c == '+' { 1.1 } else { 0.9 };
                        app.link.send(Command::SetThreshold {
                            value: (t * f) as f32,
                        });
                    }
                }
                KeyCode::Char('s') => {
                    app.link.send(Command::GetStatus);
                }
                _ => {}
            }
            last_draw = Instant::now() - Duration::from_secs(1);
        }
    })();
    let _ = execute!(out, crossterm::cursor::Show, terminal::LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
    result
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let framing = match cli.framing {
        FramingArg::Json => Framing::Json,
        FramingArg::Cobs => Framing::Cobs,
    };
    let (mut link, rx) = open(cli, framing)?;
    let key = cli.key_file.as_deref().map(read_key).transpose()?;
    link.signer = key
        .clone()
        .map(|k| Signer::new(k, cli.link_id, Direction::ToDevice));
    let decoder = match key {
        Some(key) => Decoder::signed(framing, key),
        None => Decoder::new(framing),
    };
    let log = AlertLog::open(&cli.log_dir)
        .with_context(|| format!("cannot write the log folder {}", cli.log_dir.display()))?;
    if let Some(aside) = &log.moved_csv {
        eprintln!(
            "{} had other columns (an older monitor's): kept as {}, a new one begins",
            cli.log_dir.join("alerts.csv").display(),
            aside.display()
        );
    }
    let mut app = App {
        session: Session::default(),
        decoder,
        log,
        link,
        link_state: "open".into(),
        acks: 0,
        selected: None,
        paused: false,
        evidence_wanted: cli.fetch_evidence.then(Default::default),
        evidence_fetching: None,
    };
    if cli.lines || !std::io::stdout().is_terminal() {
        run_lines(&mut app, &rx)
    } else {
        run_view(&mut app, &rx)
    }
}

/// The link key in `path` (64 hexadecimal digits; on Unix readable by its owner only).
fn read_key(path: &std::path::Path) -> anyhow::Result<LinkKey> {
    let bytes = inspect_protocol::secret_file::read_owner_only(path)
        .with_context(|| format!("key file {}", path.display()))?;
    LinkKey::from_file_content(&bytes).with_context(|| format!("{}", path.display()))
}

fn report(log_dir: &std::path::Path, out: &std::path::Path, section_m: f64) -> anyhow::Result<()> {
    if !(1.0..=100_000.0).contains(&section_m) {
        anyhow::bail!("--section-m {section_m}: 1 to 100000 metres");
    }
    let summary = inspect_monitor::report::write_report(&inspect_monitor::report::ReportOptions {
        log_dir: log_dir.to_path_buf(),
        out: out.to_path_buf(),
        section_m,
    })?;
    println!(
        "{}: {} alerts ({} placed, {} with images) in {} sections; CSV: {}",
        out.display(),
        summary.alerts,
        summary.placed,
        summary.with_evidence,
        summary.sections,
        out.with_extension("csv").display()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let outcome = match &cli.command {
        Some(Sub::Report {
            log_dir,
            out,
            section_m,
        }) => report(log_dir, out, *section_m),
        None => run(&cli),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inspect-monitor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
