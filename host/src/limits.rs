//! Per-call ceilings: what a caller asks for, the host's defaults and maxima, and the
//! resolved ceilings a call actually runs under.

use std::time::Duration;

use crate::bindings::WitLimits;

/// Ceilings a caller asks for. `None` means the host's default for that ceiling.
///
/// Requests above the host's maximum are clamped to the maximum, never refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Fuel the call may burn (about one unit per WebAssembly instruction).
    pub fuel: Option<u64>,
    /// Bytes of linear memory the call's instance may grow to, summed over memories.
    pub memory_bytes: Option<u64>,
    /// Wall-clock time the call may take, instantiation included.
    pub timeout: Option<Duration>,
    /// Bytes the call's output payload may hold.
    pub output_bytes: Option<u64>,
}

/// The ceilings a call runs under, every one resolved to a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    /// Fuel the call may burn.
    pub fuel: u64,
    /// Bytes of linear memory the instance may hold.
    pub memory_bytes: u64,
    /// Wall-clock time the call may take.
    pub timeout: Duration,
    /// Bytes the output payload may hold.
    pub output_bytes: u64,
}

impl Ceilings {
    /// The defaults a call gets when it asks for nothing.
    ///
    /// One billion units of fuel is on the order of a second of busy guest code; 64 MiB
    /// of memory and 16 MiB of output suit functions over rows and documents; 10 s is a
    /// generous deadline for a function meant to answer interactively.
    pub const DEFAULT: Ceilings = Ceilings {
        fuel: 1_000_000_000,
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(10),
        output_bytes: 16 << 20,
    };

    /// The most any call may ask for unless the operator raises it.
    pub const MAXIMUM: Ceilings = Ceilings {
        fuel: 100_000_000_000,
        memory_bytes: 1 << 30,
        timeout: Duration::from_secs(300),
        output_bytes: 256 << 20,
    };

    /// Resolves a request: each `None` takes `defaults`, each value is clamped to `self`
    /// (the maxima).
    pub fn resolve(&self, defaults: &Ceilings, request: &Limits) -> Ceilings {
        Ceilings {
            fuel: request.fuel.unwrap_or(defaults.fuel).min(self.fuel),
            memory_bytes: request
                .memory_bytes
                .unwrap_or(defaults.memory_bytes)
                .min(self.memory_bytes),
            timeout: request
                .timeout
                .unwrap_or(defaults.timeout)
                .min(self.timeout),
            output_bytes: request
                .output_bytes
                .unwrap_or(defaults.output_bytes)
                .min(self.output_bytes),
        }
    }
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings::DEFAULT
    }
}

impl From<WitLimits> for Limits {
    fn from(l: WitLimits) -> Limits {
        Limits {
            fuel: l.fuel,
            memory_bytes: l.memory_bytes,
            timeout: l.timeout_ms.map(std::time::Duration::from_millis),
            output_bytes: l.output_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_take_defaults_and_are_clamped() {
        let max = Ceilings::MAXIMUM;
        let got = max.resolve(
            &Ceilings::DEFAULT,
            &Limits {
                fuel: Some(u64::MAX),
                memory_bytes: Some(1024),
                ..Limits::default()
            },
        );
        assert_eq!(got.fuel, max.fuel);
        assert_eq!(got.memory_bytes, 1024);
        assert_eq!(got.timeout, Ceilings::DEFAULT.timeout);
        assert_eq!(got.output_bytes, Ceilings::DEFAULT.output_bytes);
    }
}
