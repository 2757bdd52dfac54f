//! The daemon's main loop: capture thread -> [`Detector`] (tiles -> engine -> scorer) -> alert
//! link.
//!
//! Capture runs on its own thread and hands frames over a one-frame slot: for a live source the
//! newest frame replaces one that inference has not taken yet (and the drop is counted); a
//! recorded source waits instead, so no file is skipped. Alerts are journalled and handed to the
//! link thread, which never blocks inference; evidence goes to its own writer thread. Commands
//! from the peer (threshold, pause, status) are applied between frames. systemd is told READY
//! once the model is loaded and the source is open, WATCHDOG for every frame taken from the
//! camera (processed, or discarded while paused: a stuck camera or inference stops the pings),
//! and STATUS with each status report.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::alerts::journal::{JournalError, PeerThreshold};
use crate::alerts::settings::AlertOutput;
use crate::alerts::{Alert, AlertLink, Control, DeviceId, LinkError, ModelId, Status};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::evidence::{EvidenceError, EvidenceJob, EvidenceWriter};
use crate::frames::{Frame, FrameError, FrameSource, SourceSettings};
use crate::gpio::{GpioError, Indicators};
use crate::position::PositionTracker;
use crate::record::{RecordError, Recorder};
use inspect_core::bundle::{Bundle, BundleError};
use inspect_core::detector::Detector;
use inspect_core::engine::{set_threads, EngineError};

/// How long the main loop waits for a frame before checking for shutdown again.
const POLL: Duration = Duration::from_millis(200);

/// Fatal errors of the daemon. Per-frame faults are logged and counted, never returned.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The bundle is missing, damaged or inconsistent.
    #[error("model bundle: {0}")]
    Bundle(#[from] BundleError),
    /// The models could not be prepared or run.
    #[error("inference: {0}")]
    Engine(#[from] EngineError),
    /// The frame source cannot deliver.
    #[error("frame source: {0}")]
    Frames(#[from] FrameError),
    /// The alert link could not start.
    #[error("alert link: {0}")]
    Link(#[from] LinkError),
    /// The alert journal cannot be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The evidence store cannot be opened.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The recording folder cannot be used.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// GPIO is required but unavailable.
    #[error(transparent)]
    Gpio(#[from] GpioError),
    /// A thread could not be started.
    #[error("cannot start a thread of the daemon (capture, GNSS): {0}")]
    Thread(std::io::Error),
}

/// What a run did, returned when it ends.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Frames processed.
    pub frames: u64,
    /// Tiles processed.
    pub tiles: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Frames that could not be decoded.
    pub skipped_frames: u64,
    /// Frames dropped because inference fell behind a live source.
    pub dropped_frames: u64,
    /// Times the live source failed and was reopened.
    pub source_failures: u64,
    /// Alerts lost: evicted from a full journal before the peer had them.
    pub dropped_alerts: u64,
    /// Alerts still undelivered at exit (kept in the journal for the next start).
    pub unacked: u64,
    /// Evidence not stored (writer busy or write failed).
    pub evidence_skipped: u64,
    /// Frames saved by `[record]`.
    pub recorded: u64,
    /// Frames `[record]` did not save (writer busy, folder full, write failed).
    pub record_missed: u64,
    /// What the GNSS receiver said: position sentences read, lines refused (checksum, syntax);
    /// `None` without a receiver.
    pub gnss_sentences: Option<(u64, u64)>,
}

#[derive(Default)]
struct SlotState {
    frame: Option<Frame>,
    // Set by the capture thread when the source ends: Ok for a finite source, Err for a fault.
    finished: Option<Result<(), FrameError>>,
    dropped: u64,
    skipped: u64,
    source_failures: u64,
}

/// The one-frame hand-over between capture and inference.
#[derive(Default)]
struct FrameSlot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

enum Taken {
    Frame(Frame),
    Finished(Result<(), FrameError>),
    Nothing,
}

impl FrameSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // A poisoned lock only means the other thread panicked; the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, frame: Frame, live: bool, skipped: u64, stop: &AtomicBool) {
        let mut s = self.lock();
        s.skipped = skipped;
        if live {
            if s.frame.is_some() {
                s.dropped += 1;
            }
        } else {
            while s.frame.is_some() && !stop.load(Ordering::Relaxed) {
                s = self
                    .ready
                    .wait_timeout(s, POLL)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        s.frame = Some(frame);
        self.ready.notify_all();
    }

    fn finish(&self, result: Result<(), FrameError>, skipped: u64) {
        let mut s = self.lock();
        s.skipped = skipped;
        s.finished = Some(result);
        self.ready.notify_all();
    }

    fn take(&self, timeout: Duration) -> Taken {
        let mut s = self.lock();
        if s.frame.is_none() && s.finished.is_none() {
            s = self
                .ready
                .wait_timeout(s, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if let Some(f) = s.frame.take() {
            self.ready.notify_all();
            return Taken::Frame(f);
        }
        match s.finished.take() {
            Some(r) => Taken::Finished(r),
            None => Taken::Nothing,
        }
    }

    fn source_failed(&self) {
        self.lock().source_failures += 1;
    }

    fn counts(&self) -> (u64, u64, u64) {
        let s = self.lock();
        (s.dropped, s.skipped, s.source_failures)
    }
}

/// First and longest pause between attempts to reopen a live source that failed.
const REOPEN_FIRST: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(8);

/// Sleeps `d` in short steps; returns early (false) when `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
    }
    !stop.load(Ordering::Relaxed)
}

/// Reads frames into the slot. A live source that fails is reopened with backoff (the frame
/// numbers go on); a recorded one that fails ends the run with its error.
fn capture_loop(
    settings: &SourceSettings,
    mut source: Box<dyn FrameSource>,
    interval: Duration,
    slot: &FrameSlot,
    stop: &AtomicBool,
    tracker: &PositionTracker,
) {
    let live = source.is_live();
    // Frames delivered and skipped by sources closed earlier, and frames of another size.
    let (mut number, mut skipped_before) = (0u64, 0u64);
    // Every frame must have the camera's configured size (for files: the first frame's): one
    // of another size would cut into another grid and make the head plan another batch.
    let mut size = settings.frame_size();
    while !stop.load(Ordering::Relaxed) {
        let skipped = skipped_before + source.skipped();
        match source.next_frame() {
            Ok(Some(mut frame)) => {
                let (want, got) = (
                    *size.get_or_insert(frame.image.dimensions()),
                    frame.image.dimensions(),
                );
                if got != want {
                    skipped_before += 1;
                    log::warn!(
                        "{}: frame of {}x{} skipped: frames must be {}x{}",
                        frame.origin,
                        got.0,
                        got.1,
                        want.0,
                        want.1
                    );
                    continue;
                }
                frame.number = number;
                number += 1;
                // Read as the frame is handed over, the closest the daemon gets to its capture.
                if frame.position.is_none() {
                    frame.position = tracker.position_at(frame.timestamp);
                }
                slot.put(frame, live, skipped_before + source.skipped(), stop);
            }
            Ok(None) => return slot.finish(Ok(()), skipped),
            // A stalled camera: no frame, no watchdog ping; ask again.
            Err(FrameError::Timeout(_)) => continue,
            Err(e) if live => {
                slot.source_failed();
                log::warn!("frame source failed: {e}; reopening with backoff");
                skipped_before = skipped;
                let mut backoff = Backoff::new(REOPEN_FIRST, REOPEN_MAX);
                source = loop {
                    if !sleep_unless_stopped(backoff.current(), stop) {
                        return slot.finish(Ok(()), skipped_before);
                    }
                    match settings.open() {
                        Ok((s, _)) => {
                            log::info!("frame source back");
                            break s;
                        }
                        Err(e) => {
                            log::warn!("frame source still unavailable: {e}");
                            backoff.failed();
                        }
                    }
                };
                continue;
            }
            Err(e) => return slot.finish(Err(e), skipped),
        }
        if !interval.is_zero() {
            std::thread::sleep(interval);
        }
    }
    slot.finish(Ok(()), skipped_before + source.skipped());
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify: {e}");
    }
}

/// The running daemon's state between frames.
struct Inspector<'a> {
    config: &'a Config,
    device: DeviceId,
    model: ModelId,
    detector: Detector,
    link: AlertLink,
    evidence: Option<EvidenceWriter>,
    recorder: Option<Recorder>,
    indicators: Indicators,
    /// Where the device is: named in the status line (the capture thread holds a clone).
    tracker: PositionTracker,
    summary: Summary,
    paused: bool,
    /// When a pause ends by itself (`alerts.pause_max_s` after it began).
    pause_ends: Option<Instant>,
    /// The threshold the config (or the bundle) gives, journalled with the peer's changes.
    configured_threshold: f32,
}

impl Inspector<'_> {
    /// Applies the peer's commands (validated by the link).
    fn apply_controls(&mut self, started: Instant, tiles_per_s: f32, slot: &FrameSlot) {
        while let Some(control) = self.link.next_control() {
            match control {
                Control::SetThreshold(t) => {
                    log::info!(
                        "threshold set to {t} by the peer (was {})",
                        self.detector.threshold()
                    );
                    self.detector.set_threshold(t);
                    self.link.record_threshold(PeerThreshold {
                        value: t,
                        configured: self.configured_threshold,
                        model: self.model.clone(),
                    });
                }
                Control::Pause => {
                    let limit = Duration::from_secs(self.config.alerts.pause_max_s);
                    log::info!("paused by the peer (for at most {} s)", limit.as_secs());
                    self.paused = true;
                    self.pause_ends = Some(Instant::now() + limit);
                }
                Control::Resume => {
                    log::info!("resumed by the peer");
                    self.paused = false;
                    self.pause_ends = None;
                }
                Control::StatusNow => self.status(started, tiles_per_s, slot),
            }
        }
        if self.paused && self.pause_ends.is_some_and(|t| Instant::now() >= t) {
            log::warn!(
                "pause expired after {} s without a resume: inspecting again",
                self.config.alerts.pause_max_s
            );
            self.paused = false;
            self.pause_ends = None;
        }
    }

    fn process(&mut self, frame: &Frame) -> Result<(), EngineError> {
        let tiling = self.config.tiling;
        let (link, evidence, indicators, summary) = (
            &self.link,
            &self.evidence,
            &mut self.indicators,
            &mut self.summary,
        );
        let (device, model) = (&self.device, &self.model);
        let input = &self.detector.manifest().input;
        let (in_w, in_h) = (input.width as u32, input.height as u32);
        let tiles = self.detector.detect_frame(&frame.image, tiling, |found| {
            let Some((region, area_fraction)) = found.region else {
                return;
            };
            let tile = found.tile;
            let mut alert = Alert {
                device: device.clone(),
                seq: 0,
                frame: frame.number,
                time: frame.timestamp,
                tile_index: tile.index,
                tile: tile.rect,
                score: found.score,
                threshold: found.threshold,
                region,
                area_fraction,
                model: model.clone(),
                boot: link.boot(),
                position: frame.position,
            };
            let seq = link.send_alert(&mut alert);
            summary.alerts += 1;
            if let Some(writer) = evidence {
                writer.submit(EvidenceJob {
                    seq,
                    tile: image::imageops::crop_imm(
                        &frame.image,
                        tile.rect.x,
                        tile.rect.y,
                        tile.rect.width,
                        tile.rect.height,
                    )
                    .to_image(),
                    map: found.map.to_vec(),
                    width: in_w,
                    height: in_h,
                    threshold: found.threshold,
                });
            }
            indicators.alert();
        })?;
        summary.tiles += tiles as u64;
        Ok(())
    }

    fn status(&mut self, started: Instant, tiles_per_s: f32, slot: &FrameSlot) {
        let (dropped, skipped, failures) = slot.counts();
        self.summary.dropped_frames = dropped;
        self.summary.skipped_frames = skipped;
        self.summary.source_failures = failures;
        self.summary.dropped_alerts = self.link.dropped();
        let unacked = self.link.unacked();
        let status = Status {
            device: self.device.clone(),
            time: SystemTime::now(),
            frames: self.summary.frames,
            tiles_per_s,
            dropped_frames: dropped,
            skipped_frames: skipped,
            source_failures: failures,
            alerts: self.summary.alerts,
            dropped_alerts: self.summary.dropped_alerts,
            unacked,
            paused: self.paused,
            uptime_s: started.elapsed().as_secs(),
            model: self.model.clone(),
            boot: self.link.boot(),
            threshold: self.detector.threshold(),
            refused_commands: self.link.refused_commands(),
        };
        let text = format!(
            "frames {} alerts {} tiles/s {:.1} dropped frames {} skipped {} source failures {} unacked {} lost alerts {} threshold {} refused commands {}{}",
            status.frames,
            status.alerts,
            tiles_per_s,
            dropped,
            skipped,
            failures,
            unacked,
            status.dropped_alerts,
            status.threshold,
            status.refused_commands,
            if self.paused { " (paused)" } else { "" }
        );
        let text = match &self.recorder {
            Some(r) => {
                let c = r.counters();
                format!(
                    "{text}; recorded {} frames ({} missed: writer busy, folder full or write failed)",
                    c.saved.load(Ordering::Relaxed),
                    c.missed()
                )
            }
            None => text,
        };
        let text = match self.tracker.describe(SystemTime::now()) {
            Some(position) => format!("{text}; {position}"),
            None => text,
        };
        self.link.send_status(status);
        notify(&[sd_notify::NotifyState::Status(&text)]);
        log::info!("{text}");
    }
}

/// The ids as sent; validated by the config and the bundle loader to fit.
fn ids(config: &Config, bundle: &Bundle) -> (DeviceId, ModelId) {
    let cut = |s: &str, n: usize| s.get(..n.min(s.len())).unwrap_or_default().to_string();
    (
        DeviceId::try_from(cut(&config.device_id, 32).as_str()).unwrap_or_default(),
        ModelId::try_from(cut(&bundle.model_id, 12).as_str()).unwrap_or_default(),
    )
}

/// Loads everything the config names, then inspects frames until the source ends or `stop` is set.
pub fn run(config: &Config, stop: Arc<AtomicBool>) -> Result<Summary, DaemonError> {
    let (bundle, _fallback) = config.model.load_bundle()?;
    log::info!(
        "bundle {} (model {}, extractor {}, {} levels)",
        bundle.dir.display(),
        bundle.model_id,
        bundle.manifest.extractor.name,
        bundle.manifest.levels.len()
    );
    let calibrated = bundle.manifest.threshold.value;
    let threshold = config.model.threshold.unwrap_or(calibrated);
    let (device, model) = ids(config, &bundle);
    set_threads(config.model.threads);
    let mut detector = Detector::new(bundle, config.model.precision, threshold)?;
    detector.engine_mut().set_workers(config.model.workers)?;
    let indicators = Indicators::open(config.gpio.as_ref())?;
    let tracker = PositionTracker::start(config.position.as_ref(), indicators.pulses())
        .map_err(DaemonError::Thread)?;
    let journal = config.journal.open()?;
    let evidence = config.evidence.as_ref().map(|e| e.start()).transpose()?;
    let recorder = config.record.as_ref().map(Recorder::start).transpose()?;
    let (source, interval) = config.source.open()?;
    let live = source.is_live();
    let alerts = &config.alerts;
    let evidence_dir = config.evidence.as_ref().map(|e| e.dir.clone());
    let mut settings = alerts.link_settings(device.clone(), threshold, calibrated, evidence_dir);
    // A threshold the peer set before a restart stays, for the same model and config.
    if let Some(t) = journal.peer_threshold(&model, threshold) {
        let (lo, hi) = settings.threshold_range;
        if (lo..=hi).contains(&t) {
            log::info!("threshold {t}, set by the peer before the restart (journal)");
            detector.set_threshold(t);
            settings.threshold = t;
        }
    }
    log::info!("boot id {:016x}", settings.boot);
    if alerts.output == AlertOutput::Serial && alerts.key.is_none() {
        log::warn!(
            "alerts.key_file is not set: commands are not authenticated, anyone who can write \
             to {} can acknowledge alerts, pause inspection and move the threshold \
             (docs/protocol.md, Signed frames)",
            alerts
                .port
                .as_deref()
                .unwrap_or(Path::new("the port"))
                .display()
        );
    }
    let link = AlertLink::start(settings, journal)?;

    let slot = Arc::new(FrameSlot::default());
    let capture = {
        let (slot, stop, source_config) = (slot.clone(), stop.clone(), config.source.clone());
        let tracker = tracker.clone();
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture_loop(&source_config, source, interval, &slot, &stop, &tracker))
            .map_err(DaemonError::Thread)?
    };

    let mut inspector = Inspector {
        config,
        device,
        model,
        detector,
        link,
        evidence,
        recorder,
        indicators,
        tracker: tracker.clone(),
        summary: Summary::default(),
        paused: false,
        pause_ends: None,
        configured_threshold: threshold,
    };
    notify(&[sd_notify::NotifyState::Ready]);
    let started = Instant::now();
    let status_every = Duration::from_secs(alerts.status_interval_s);
    let (mut last_status, mut tiles_at_status) = (Instant::now(), 0u64);
    let mut rate = 0.0f32;
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        inspector.apply_controls(started, rate, &slot);
        match slot.take(POLL) {
            Taken::Frame(_) if inspector.paused || !inspector.indicators.inspect_next() => {
                // Paused, or waiting for the trigger: frames still flow (the watchdog sees a
                // live camera), inspection waits.
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Taken::Frame(frame) => {
                if let Some(recorder) = &mut inspector.recorder {
                    recorder.offer(&frame, !live);
                }
                match inspector.process(&frame) {
                    Ok(()) => inspector.summary.frames += 1,
                    Err(e) => log::error!("frame {} ({}): {e}", frame.number, frame.origin),
                }
                inspector.indicators.frame_done();
                notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Taken::Finished(r) => {
                result = r;
                break;
            }
            Taken::Nothing => {}
        }
        if last_status.elapsed() >= status_every {
            let secs = last_status.elapsed().as_secs_f32();
            rate = (inspector.summary.tiles - tiles_at_status) as f32 / secs;
            inspector.status(started, rate, &slot);
            (last_status, tiles_at_status) = (Instant::now(), inspector.summary.tiles);
        }
    }
    stop.store(true, Ordering::Relaxed);
    if capture.join().is_err() {
        log::error!("the capture thread panicked");
    }
    let secs = last_status.elapsed().as_secs_f32().max(1e-3);
    let rate = (inspector.summary.tiles - tiles_at_status) as f32 / secs;
    inspector.status(started, rate, &slot);
    notify(&[sd_notify::NotifyState::Stopping]);
    let Inspector {
        link,
        evidence,
        recorder,
        mut summary,
        ..
    } = inspector;
    if let Some(recorder) = recorder {
        let counters = recorder.close();
        summary.recorded = counters.saved.load(Ordering::Relaxed);
        summary.record_missed = counters.missed();
    }
    summary.evidence_skipped = evidence.as_ref().map_or(0, EvidenceWriter::skipped);
    if let PositionTracker::Gnss(receiver) = &tracker {
        receiver.stop();
        summary.gnss_sentences = Some(receiver.counts());
    }
    // Finish writing evidence before the link may be asked for it no more.
    drop(evidence);
    summary.dropped_alerts = link.dropped();
    summary.unacked = link.close(Duration::from_millis(alerts.drain_timeout_ms));
    if summary.unacked > 0 {
        log::warn!(
            "{} alerts undelivered at exit; they stay in the journal for the next start",
            summary.unacked
        );
    }
    result?;
    Ok(summary)
}
