//! Alert LED, buzzer, heartbeat LED and the inspection trigger on Raspberry Pi GPIO (feature
//! `gpio`).
//!
//! GPIO is optional hardware: off a Raspberry Pi, or in a build without the `gpio` feature, the
//! indicators log that they are unavailable and do nothing, unless the config says
//! `gpio.required = true`, in which case the daemon refuses to start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use inspect_core::settings::{Checker, ConfigError};

/// Highest BCM GPIO line on a Raspberry Pi header.
pub const MAX_GPIO_LINE: u8 = 27;

/// `[gpio]`: BCM line numbers, 0-27.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpioSettings {
    /// Refuse to start when GPIO is unavailable (otherwise log it and go on).
    #[serde(default)]
    pub required: bool,
    /// LED lit for `alert_pulse_ms` on every alert.
    #[serde(default)]
    pub alert_led: Option<u8>,
    /// Buzzer sounded with the alert LED.
    #[serde(default)]
    pub buzzer: Option<u8>,
    /// LED toggled once per processed frame.
    #[serde(default)]
    pub heartbeat_led: Option<u8>,
    /// Length of the alert pulse in milliseconds, 10-10000.
    #[serde(default = "default_pulse")]
    pub alert_pulse_ms: u64,
    /// Input line that triggers inspection (e.g. an odometry pulse every few cm); absent:
    /// inspect every frame (free-run).
    #[serde(default)]
    pub trigger: Option<u8>,
    /// Which edge of the trigger counts: `rising` (default), `falling` or `both`.
    #[serde(default)]
    pub trigger_edge: TriggerEdge,
    /// Inspect one frame every this many trigger pulses, 1-10000.
    #[serde(default = "default_every")]
    pub trigger_every: u32,
}

/// Trigger edges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerEdge {
    /// Low to high.
    #[default]
    Rising,
    /// High to low.
    Falling,
    /// Either.
    Both,
}

fn default_every() -> u32 {
    1
}

fn default_pulse() -> u64 {
    200
}

impl GpioSettings {
    /// Checks every line number and duration; a line may serve one purpose only.
    pub fn validate(&self, c: &Checker<'_>) -> Result<(), ConfigError> {
        let lines = [
            ("gpio.alert_led", self.alert_led),
            ("gpio.buzzer", self.buzzer),
            ("gpio.heartbeat_led", self.heartbeat_led),
            ("gpio.trigger", self.trigger),
        ];
        let mut used = Vec::new();
        for (key, line) in lines {
            if let Some(line) = line {
                c.range(key, line, 0, MAX_GPIO_LINE)?;
                if used.contains(&line) {
                    return Err(c.fail(key, line, "each GPIO line may be used once"));
                }
                used.push(line);
            }
        }
        c.range("gpio.alert_pulse_ms", self.alert_pulse_ms, 10, 10_000)?;
        c.range("gpio.trigger_every", self.trigger_every, 1, 10_000)
    }
}

/// GPIO could not be opened although the config requires it.
#[derive(Debug, thiserror::Error)]
#[error("GPIO is required by the config (gpio.required = true) but unavailable: {0}")]
pub struct GpioError(String);

/// The output pins in use (and the trigger input, kept open for its interrupt).
#[cfg(feature = "gpio")]
struct Pins {
    alert: Vec<rppal::gpio::OutputPin>,
    heartbeat: Option<rppal::gpio::OutputPin>,
    _trigger: Option<rppal::gpio::InputPin>,
}

#[cfg(feature = "gpio")]
fn open_pins(config: &GpioSettings, pulses: &Arc<Pulses>) -> Result<Pins, String> {
    let gpio = rppal::gpio::Gpio::new().map_err(|e| e.to_string())?;
    let out = |line: u8| {
        gpio.get(line)
            .map(|p| p.into_output_low())
            .map_err(|e| format!("GPIO line {line}: {e}"))
    };
    let mut alert = Vec::new();
    for line in [config.alert_led, config.buzzer].into_iter().flatten() {
        alert.push(out(line)?);
    }
    let heartbeat = config.heartbeat_led.map(out).transpose()?;
    let trigger = match config.trigger {
        None => None,
        Some(line) => {
            let mut pin = gpio
                .get(line)
                .map_err(|e| format!("GPIO line {line}: {e}"))?
                .into_input_pulldown();
            let edge = match config.trigger_edge {
                TriggerEdge::Rising => rppal::gpio::Trigger::RisingEdge,
                TriggerEdge::Falling => rppal::gpio::Trigger::FallingEdge,
                TriggerEdge::Both => rppal::gpio::Trigger::Both,
            };
            let counter = pulses.clone();
            // Debounce: odometry reed switches bounce for about a millisecond.
            pin.set_async_interrupt(edge, Some(Duration::from_millis(1)), move |_| {
                counter.record();
            })
            .map_err(|e| format!("GPIO line {line} interrupt: {e}"))?;
            Some(pin)
        }
    };
    Ok(Pins {
        alert,
        heartbeat,
        _trigger: trigger,
    })
}

#[cfg(not(feature = "gpio"))]
struct Pins;

#[cfg(not(feature = "gpio"))]
fn open_pins(_config: &GpioSettings, _pulses: &Arc<Pulses>) -> Result<Pins, String> {
    Err("this build has no GPIO support (build with --features gpio)".into())
}

/// Trigger pulses counted by the interrupt thread and taken by the inspection loop: one
/// inspection per `every` pulses. Pulses that arrive while a frame is inspected are not lost,
/// but a backlog is not replayed either: inspection follows the newest frame.
#[derive(Debug)]
pub struct Pulses {
    count: AtomicU64,
    taken: AtomicU64,
    every: u64,
}

impl Pulses {
    /// A counter that asks for one inspection per `every` pulses.
    pub fn new(every: u32) -> Pulses {
        Pulses {
            count: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            every: u64::from(every.max(1)),
        }
    }

    /// Called on each edge (from the interrupt thread).
    pub fn record(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether enough pulses came since the last inspection; if so, consumes them (all whole
    /// multiples of `every`, so a burst asks for one inspection, not many stale ones).
    pub fn take(&self) -> bool {
        let count = self.count.load(Ordering::Relaxed);
        let taken = self.taken.load(Ordering::Relaxed);
        if count - taken < self.every {
            return false;
        }
        let consumed = (count - taken) / self.every * self.every;
        self.taken.store(taken + consumed, Ordering::Relaxed);
        true
    }

    /// Pulses seen since start.
    pub fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The indicators (alert pulse, heartbeat) and the trigger.
pub struct Indicators {
    pins: Option<Pins>,
    pulse: Duration,
    pulse_until: Option<Instant>,
    // Some when a trigger line is configured and open: inspect only on its pulses.
    trigger: Option<Arc<Pulses>>,
}

impl std::fmt::Debug for Indicators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indicators")
            .field("available", &self.pins.is_some())
            .finish()
    }
}

impl Indicators {
    /// Opens the configured pins. Fails only when GPIO is required and unavailable.
    pub fn open(config: Option<&GpioSettings>) -> Result<Indicators, GpioError> {
        let Some(config) = config else {
            return Ok(Indicators::none());
        };
        let pulse = Duration::from_millis(config.alert_pulse_ms);
        let pulses = Arc::new(Pulses::new(config.trigger_every));
        match open_pins(config, &pulses) {
            Ok(pins) => {
                if let Some(line) = config.trigger {
                    log::info!(
                        "inspecting one frame every {} trigger pulses on GPIO {line}",
                        config.trigger_every
                    );
                }
                Ok(Indicators {
                    pins: Some(pins),
                    pulse,
                    pulse_until: None,
                    trigger: config.trigger.map(|_| pulses),
                })
            }
            Err(e) if config.required => Err(GpioError(e)),
            Err(e) => {
                log::warn!("GPIO unavailable, indicators disabled: {e}");
                if config.trigger.is_some() {
                    log::warn!("no trigger input: inspecting every frame (free-run)");
                }
                Ok(Indicators {
                    pins: None,
                    pulse,
                    pulse_until: None,
                    trigger: None,
                })
            }
        }
    }

    /// Indicators that do nothing.
    pub fn none() -> Indicators {
        Indicators {
            pins: None,
            pulse: Duration::ZERO,
            pulse_until: None,
            trigger: None,
        }
    }

    /// Whether the next frame should be inspected: always in free-run, after enough trigger
    /// pulses otherwise.
    pub fn inspect_next(&self) -> bool {
        self.trigger.as_ref().is_none_or(|p| p.take())
    }

    /// The trigger's pulse counter, when a trigger line is open (the odometer counts it).
    pub fn pulses(&self) -> Option<Arc<Pulses>> {
        self.trigger.clone()
    }

    /// Whether real pins are driven.
    pub fn available(&self) -> bool {
        self.pins.is_some()
    }

    /// Starts (or extends) the alert pulse.
    pub fn alert(&mut self) {
        if self.pins.is_none() {
            return;
        }
        self.pulse_until = Some(Instant::now() + self.pulse);
        #[cfg(feature = "gpio")]
        if let Some(p) = &mut self.pins {
            p.alert.iter_mut().for_each(|pin| pin.set_high());
        }
    }

    /// Called once per processed frame: toggles the heartbeat, ends an expired alert pulse.
    pub fn frame_done(&mut self) {
        let expired = self.pulse_until.is_some_and(|t| Instant::now() >= t);
        if expired {
            self.pulse_until = None;
        }
        #[cfg(feature = "gpio")]
        if let Some(p) = &mut self.pins {
            if let Some(h) = &mut p.heartbeat {
                h.toggle();
            }
            if expired {
                p.alert.iter_mut().for_each(|pin| pin.set_low());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(required: bool) -> GpioSettings {
        GpioSettings {
            required,
            alert_led: Some(17),
            buzzer: None,
            heartbeat_led: Some(27),
            alert_pulse_ms: 100,
            trigger: Some(5),
            trigger_edge: TriggerEdge::Rising,
            trigger_every: 4,
        }
    }

    #[test]
    fn one_inspection_per_n_pulses_and_a_burst_asks_once() {
        let p = Pulses::new(4);
        assert!(!p.take());
        for _ in 0..3 {
            p.record();
        }
        assert!(!p.take(), "3 of 4 pulses");
        p.record();
        assert!(p.take());
        assert!(!p.take(), "consumed");
        // The robot moved 3 metres while one frame was inspected: one inspection, not 10.
        for _ in 0..41 {
            p.record();
        }
        assert!(p.take());
        assert!(!p.take());
        for _ in 0..3 {
            p.record();
        }
        assert!(
            p.take(),
            "the remainder of the burst counts towards the next"
        );
        assert_eq!(p.total(), 48);
    }

    // These tests run off a Raspberry Pi (CI, qemu): GPIO is absent there.
    #[test]
    fn missing_gpio_is_logged_unless_required() {
        if std::path::Path::new("/dev/gpiomem").exists() {
            return; // On a real Pi the pins open; nothing to check here.
        }
        let mut soft = Indicators::open(Some(&config(false))).unwrap();
        assert!(!soft.available());
        assert!(soft.inspect_next(), "no trigger input: free-run");
        soft.alert();
        soft.frame_done();
        let err = Indicators::open(Some(&config(true))).unwrap_err();
        assert!(err.to_string().contains("gpio.required"), "{err}");
    }
}
