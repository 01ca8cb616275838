//! FUSE mount options, as given to `weir mount -o` or in `fuse.options`.

use std::time::Duration;

use weir_fs::KernelCache;

/// A mount option that weir does not know or cannot parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The option name is not one weir supports.
    #[error(
        "unknown mount option {0:?} (known: kernel_cache, auto_cache, attr_timeout=N, entry_timeout=N, max_background=N, max_idle_threads=N, ro, rw, allow_other, default_permissions)"
    )]
    Unknown(String),
    /// The option's value is not valid.
    #[error("mount option {name}: {reason}")]
    Invalid {
        /// The option.
        name: String,
        /// Why its value was refused.
        reason: String,
    },
}

/// Parsed mount options.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// Kernel page cache policy across opens.
    pub kernel_cache: KernelCache,
    /// How long the kernel trusts attributes.
    pub attr_timeout: Duration,
    /// How long the kernel trusts names (and their absence).
    pub entry_timeout: Duration,
    /// Most background requests (read-ahead) the kernel queues.
    pub max_background: u16,
    /// Caps the FUSE worker threads (weir runs a fixed pool).
    pub max_idle_threads: Option<usize>,
    /// Mount read-only.
    pub read_only: bool,
    /// Let users other than the mounter use the mount.
    pub allow_other: bool,
    /// Let the kernel check permission bits.
    pub default_permissions: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            kernel_cache: KernelCache::Off,
            attr_timeout: Duration::from_secs(1),
            entry_timeout: Duration::from_secs(1),
            max_background: 64,
            max_idle_threads: None,
            read_only: false,
            allow_other: false,
            default_permissions: false,
        }
    }
}

impl MountOptions {
    /// Parses options; each item may itself be a comma-separated list.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<MountOptions, OptionError> {
        let mut o = MountOptions::default();
        for item in items {
            for opt in item
                .as_ref()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                o.apply(opt)?;
            }
        }
        Ok(o)
    }

    fn apply(&mut self, opt: &str) -> Result<(), OptionError> {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        match (name, value) {
            ("kernel_cache", None) => self.kernel_cache = KernelCache::Keep,
            ("auto_cache", None) => self.kernel_cache = KernelCache::Auto,
            ("ro", None) => self.read_only = true,
            ("rw", None) => self.read_only = false,
            ("allow_other", None) => self.allow_other = true,
            ("default_permissions", None) => self.default_permissions = true,
            ("attr_timeout", Some(v)) => self.attr_timeout = seconds(name, v)?,
            ("entry_timeout", Some(v)) => self.entry_timeout = seconds(name, v)?,
            ("max_background", Some(v)) => {
                self.max_background = number(name, v, 1, u64::from(u16::MAX))? as u16;
            }
            ("max_idle_threads", Some(v)) => {
                self.max_idle_threads = Some(number(name, v, 1, 1024)? as usize);
            }
            (
                "kernel_cache" | "auto_cache" | "ro" | "rw" | "allow_other" | "default_permissions",
                Some(_),
            ) => {
                return Err(OptionError::Invalid {
                    name: name.into(),
                    reason: "takes no value".into(),
                });
            }
            ("attr_timeout" | "entry_timeout" | "max_background" | "max_idle_threads", None) => {
                return Err(OptionError::Invalid {
                    name: name.into(),
                    reason: "needs a value, as in name=N".into(),
                });
            }
            _ => return Err(OptionError::Unknown(opt.into())),
        }
        Ok(())
    }
}

fn seconds(name: &str, v: &str) -> Result<Duration, OptionError> {
    let secs: f64 = v.parse().map_err(|_| OptionError::Invalid {
        name: name.into(),
        reason: format!("{v:?} is not a number of seconds"),
    })?;
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(OptionError::Invalid {
            name: name.into(),
            reason: format!("{v} is out of range"),
        });
    }
    Ok(Duration::from_secs_f64(secs))
}

fn number(name: &str, v: &str, min: u64, max: u64) -> Result<u64, OptionError> {
    let n: u64 = v.parse().map_err(|_| OptionError::Invalid {
        name: name.into(),
        reason: format!("{v:?} is not a whole number"),
    })?;
    if n < min || n > max {
        return Err(OptionError::Invalid {
            name: name.into(),
            reason: format!("{n} is not within {min}..={max}"),
        });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_options() {
        let o = MountOptions::parse(&[
            "kernel_cache,attr_timeout=60",
            "entry_timeout=0.5,max_background=128,max_idle_threads=8,ro,allow_other",
        ])
        .unwrap();
        assert_eq!(o.kernel_cache, KernelCache::Keep);
        assert_eq!(o.attr_timeout, Duration::from_secs(60));
        assert_eq!(o.entry_timeout, Duration::from_millis(500));
        assert_eq!(o.max_background, 128);
        assert_eq!(o.max_idle_threads, Some(8));
        assert!(o.read_only && o.allow_other);
        assert_eq!(
            MountOptions::parse(&["auto_cache"]).unwrap().kernel_cache,
            KernelCache::Auto
        );
    }

    #[test]
    fn refuses_bad_options_clearly() {
        assert!(matches!(
            MountOptions::parse(&["bogus"]),
            Err(OptionError::Unknown(_))
        ));
        for bad in [
            "attr_timeout",
            "attr_timeout=x",
            "attr_timeout=-1",
            "max_background=0",
            "ro=1",
        ] {
            assert!(
                matches!(
                    MountOptions::parse(&[bad]),
                    Err(OptionError::Invalid { .. })
                ),
                "{bad}"
            );
        }
    }
}
