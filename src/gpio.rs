//! Alert LED, buzzer and heartbeat LED on Raspberry Pi GPIO (feature `gpio`).
//!
//! GPIO is optional hardware: off a Raspberry Pi, or in a build without the `gpio` feature, the
//! indicators log that they are unavailable and do nothing, unless the config says
//! `gpio.required = true`, in which case the daemon refuses to start.

use std::time::{Duration, Instant};

use crate::config::GpioConfig;

/// GPIO could not be opened although the config requires it.
#[derive(Debug, thiserror::Error)]
#[error("GPIO is required by the config (gpio.required = true) but unavailable: {0}")]
pub struct GpioError(String);

/// The output pins in use.
#[cfg(feature = "gpio")]
struct Pins {
    alert: Vec<rppal::gpio::OutputPin>,
    heartbeat: Option<rppal::gpio::OutputPin>,
}

#[cfg(feature = "gpio")]
fn open_pins(config: &GpioConfig) -> Result<Pins, String> {
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
    Ok(Pins { alert, heartbeat })
}

#[cfg(not(feature = "gpio"))]
struct Pins;

#[cfg(not(feature = "gpio"))]
fn open_pins(_config: &GpioConfig) -> Result<Pins, String> {
    Err("this build has no GPIO support (build with --features gpio)".into())
}

/// The indicators: alert pulse and heartbeat.
pub struct Indicators {
    pins: Option<Pins>,
    pulse: Duration,
    pulse_until: Option<Instant>,
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
    pub fn open(config: Option<&GpioConfig>) -> Result<Indicators, GpioError> {
        let Some(config) = config else {
            return Ok(Indicators::none());
        };
        let pulse = Duration::from_millis(config.alert_pulse_ms);
        match open_pins(config) {
            Ok(pins) => Ok(Indicators {
                pins: Some(pins),
                pulse,
                pulse_until: None,
            }),
            Err(e) if config.required => Err(GpioError(e)),
            Err(e) => {
                log::warn!("GPIO unavailable, indicators disabled: {e}");
                Ok(Indicators {
                    pins: None,
                    pulse,
                    pulse_until: None,
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
        }
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

    fn config(required: bool) -> GpioConfig {
        GpioConfig {
            required,
            alert_led: Some(17),
            buzzer: None,
            heartbeat_led: Some(27),
            alert_pulse_ms: 100,
        }
    }

    // These tests run off a Raspberry Pi (CI, qemu): GPIO is absent there.
    #[test]
    fn missing_gpio_is_logged_unless_required() {
        if std::path::Path::new("/dev/gpiomem").exists() {
            return; // On a real Pi the pins open; nothing to check here.
        }
        let mut soft = Indicators::open(Some(&config(false))).unwrap();
        assert!(!soft.available());
        soft.alert();
        soft.frame_done();
        let err = Indicators::open(Some(&config(true))).unwrap_err();
        assert!(err.to_string().contains("gpio.required"), "{err}");
    }
}
