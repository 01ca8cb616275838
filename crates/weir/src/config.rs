//! The weir configuration file, its defaults, and `--set key=value`.
//!
//! Every key has a default, so `weir mount MOUNTPOINT --ufs URI` needs no
//! file. Unknown keys are errors, not silently ignored: a typo must not turn
//! a switch off without anyone noticing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytesize::ByteSize;
use serde::{Deserialize, Deserializer};
use serde_yaml_ng::Value;
use weir_namespace::MountSpec;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The mount table.
    pub mounts: Vec<MountSpec>,
    /// The data cache.
    pub cache: CacheSection,
    /// The metadata cache.
    pub metadata: MetadataSection,
    /// FUSE options and semantics switches.
    pub fuse: FuseSection,
    /// Asynchronous write-back (not available yet).
    pub write_cache: WriteCacheSection,
    /// Cluster mode: the mount table in etcd.
    pub cluster: ClusterSection,
    /// The Prometheus endpoint.
    pub metrics: MetricsSection,
}

/// `cache:`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Directory of the page cache, staging files and the default log.
    pub dir: PathBuf,
    /// Most bytes of file data kept on disk.
    pub capacity: ByteSize,
    /// Size of one cached page.
    pub page_size: ByteSize,
    /// Bytes of hot pages also kept in memory (0: off).
    pub memory: ByteSize,
    /// Most bytes read ahead of a sequential reader.
    pub readahead: ByteSize,
    /// Most bytes one storage request fetches for read-ahead.
    pub fetch_size: ByteSize,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            dir: PathBuf::from("/var/cache/weir"),
            capacity: ByteSize::gib(10),
            page_size: ByteSize::mib(1),
            memory: ByteSize::b(0),
            readahead: ByteSize::mib(32),
            fetch_size: ByteSize::mib(8),
        }
    }
}

/// `metadata:`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataSection {
    /// How long stat results and listings from the UFS are trusted.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
}

impl Default for MetadataSection {
    fn default() -> Self {
        MetadataSection {
            ttl: Duration::from_secs(60),
        }
    }
}

/// `fuse:`
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FuseSection {
    /// Mount options, as for `-o`.
    pub options: Vec<String>,
    /// Allow append, random writes and truncate to any size.
    pub random_writes: bool,
    /// Allow symlink and readlink.
    pub symlinks: bool,
    /// Let the kernel run lookups and readdirs of one directory in parallel.
    pub parallel_dirops: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// Kernel read-ahead of the mount in KiB (the kernel's default is 128).
    pub read_ahead_kb: u32,
    /// Let the kernel read wholly cached files straight from the cache.
    pub passthrough: bool,
    /// How often the supervisor checks that the mount answers (0: never).
    #[serde(deserialize_with = "duration")]
    pub probe_interval: Duration,
    /// How long a check may take before the daemon counts as hung and is
    /// replaced (0: never).
    #[serde(deserialize_with = "duration")]
    pub probe_timeout: Duration,
}

impl Default for FuseSection {
    fn default() -> Self {
        FuseSection {
            options: Vec::new(),
            random_writes: false,
            symlinks: false,
            parallel_dirops: false,
            threads: 16,
            read_ahead_kb: 1024,
            passthrough: true,
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(30),
        }
    }
}

/// `write_cache:`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WriteCacheSection {
    /// Return from close once data is in the local cache; upload later.
    pub enabled: bool,
}

/// `cluster:`. Cluster mode is on when `etcd` names endpoints.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// etcd client URLs; empty: standalone (the YAML file's table).
    pub etcd: Vec<String>,
    /// The cluster's name: daemons with the same name share one table.
    pub name: String,
    /// This node's id; two daemons that run at once need different ids.
    /// Empty: the host name.
    pub node_id: String,
    /// How long a node stays listed after it stops renewing its lease.
    #[serde(deserialize_with = "duration")]
    pub lease_ttl: Duration,
    /// How long one etcd request may take.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// How long a starting daemon waits for the table (from etcd, or else
    /// from the last copy kept in the cache dir).
    #[serde(deserialize_with = "duration")]
    pub start_timeout: Duration,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            etcd: Vec::new(),
            name: "default".into(),
            node_id: String::new(),
            lease_ttl: Duration::from_secs(15),
            request_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(10),
        }
    }
}

impl ClusterSection {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.etcd.is_empty()
    }

    /// The node id to register with: `node_id`, or the host name.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "weir".into())
    }

    /// The cluster client's settings; `table_cache` keeps the last table.
    pub fn client_config(&self, table_cache: PathBuf) -> weir_cluster::ClusterConfig {
        let mut c =
            weir_cluster::ClusterConfig::new(self.etcd.clone(), self.name.clone(), self.node_id());
        c.lease_ttl = self.lease_ttl;
        c.request_timeout = self.request_timeout;
        c.table_cache = Some(table_cache);
        c
    }
}

/// `metrics:`
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve Prometheus text on this address (host:port); none: off.
    pub addr: Option<std::net::SocketAddr>,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) if s >= 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
        Raw::Secs(s) => Err(serde::de::Error::custom(format!(
            "{s} is not a valid number of seconds"
        ))),
        Raw::Text(t) => humantime::parse_duration(&t).map_err(|e| {
            serde::de::Error::custom(format!(
                "{t:?} is not a duration ({e}); use seconds or e.g. \"90s\""
            ))
        }),
    }
}

impl Config {
    /// Loads `file` (or the defaults) and applies `--set` overrides.
    pub fn load(file: Option<&Path>, sets: &[String]) -> anyhow::Result<Config> {
        Ok(Config::load_with_text(file, sets)?.0)
    }

    /// Like [`Config::load`], and also gives the merged document (file plus
    /// `--set`) as YAML, for a daemon that should run with exactly it.
    pub fn load_with_text(
        file: Option<&Path>,
        sets: &[String],
    ) -> anyhow::Result<(Config, String)> {
        let doc = Config::document(file, sets)?;
        let text = serde_yaml_ng::to_string(&doc).context("cannot write the config as YAML")?;
        let what = file
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "--set".into());
        let config: Config =
            serde_yaml_ng::from_value(doc).map_err(|e| anyhow::anyhow!("config {what}: {e}"))?;
        config.validate()?;
        Ok((config, text))
    }

    fn document(file: Option<&Path>, sets: &[String]) -> anyhow::Result<Value> {
        let mut doc = match file {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read config {}", f.display()))?;
                if text.trim().is_empty() {
                    Value::Mapping(Default::default())
                } else {
                    serde_yaml_ng::from_str(&text)
                        .with_context(|| format!("config {} is not valid YAML", f.display()))?
                }
            }
            None => Value::Mapping(Default::default()),
        };
        if doc.is_null() {
            doc = Value::Mapping(Default::default());
        }
        for set in sets {
            apply_set(&mut doc, set)?;
        }
        Ok(doc)
    }

    /// Refuses settings weir cannot honour, instead of ignoring them.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.write_cache.enabled {
            bail!(
                "write_cache.enabled: asynchronous write-back is not available in this version of weir; leave it off"
            );
        }
        if self.cluster.enabled() {
            if !self.mounts.is_empty() {
                bail!(
                    "cluster.etcd: in cluster mode the mount table lives in etcd; remove `mounts` (and --ufs) and add mounts with `weir fs mount PATH URI`"
                );
            }
            if self.cluster.start_timeout.is_zero() {
                bail!("cluster.start_timeout must not be zero");
            }
            self.cluster
                .client_config(PathBuf::from("/"))
                .validate()
                .map_err(|e| anyhow::anyhow!("cluster: {e}"))?;
        }
        if self.fuse.threads == 0 || self.fuse.threads > 1024 {
            bail!(
                "fuse.threads must be between 1 and 1024, not {}",
                self.fuse.threads
            );
        }
        if !(4..=1 << 20).contains(&self.fuse.read_ahead_kb) {
            bail!(
                "fuse.read_ahead_kb must be between 4 and 1048576, not {}",
                self.fuse.read_ahead_kb
            );
        }
        if self.cache.readahead.as_u64() > 1 << 30 {
            bail!("cache.readahead must be at most 1GiB");
        }
        if self.cache.fetch_size < self.cache.page_size
            || self.cache.fetch_size.as_u64() > 256 << 20
        {
            bail!(
                "cache.fetch_size must be between one page ({}) and 256MiB, not {}",
                self.cache.page_size,
                self.cache.fetch_size
            );
        }
        Ok(())
    }
}

/// Applies one `key.path=value`; the value is read as YAML, so `true`, `8`
/// and `[a, b]` keep their types.
fn apply_set(doc: &mut Value, set: &str) -> anyhow::Result<()> {
    let (key, raw) = set.split_once('=').with_context(|| {
        format!("--set {set:?}: expected key=value, as in fuse.random_writes=true")
    })?;
    if key.is_empty() || key.split('.').any(str::is_empty) {
        bail!("--set {set:?}: the key must be a dotted path such as cache.capacity");
    }
    let value: Value =
        serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
    let mut node = doc;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map = match node {
            Value::Mapping(m) => m,
            _ => bail!("--set {set:?}: {} is not a section", parts[..i].join(".")),
        };
        let k = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return Ok(());
        }
        node = map
            .entry(k)
            .or_insert_with(|| Value::Mapping(Default::default()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(yaml: &str, sets: &[&str]) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("weir.yaml");
        std::fs::write(&f, yaml)?;
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::load(Some(&f), &sets)
    }

    #[test]
    fn defaults_without_a_file() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.cache.page_size, ByteSize::mib(1));
    }

    #[test]
    fn full_file_parses() {
        let c = load_str(
            "mounts:\n  - {path: /, ufs: 'file:///srv'}\n  - path: /s3\n    ufs: s3://b/p\n    options: {endpoint: 'http://127.0.0.1:9000', region: us-east-1}\n\
             cache: {dir: /tmp/c, capacity: 2GiB, page_size: 4MiB, memory: 256MiB}\nmetadata: {ttl: 90s}\n\
             fuse: {options: [kernel_cache, 'attr_timeout=60'], random_writes: true, symlinks: true, parallel_dirops: true, threads: 8}\n\
             write_cache: {enabled: false}\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.mounts.len(), 2);
        assert_eq!(c.cache.capacity, ByteSize::gib(2));
        assert_eq!(c.metadata.ttl, Duration::from_secs(90));
        assert!(c.fuse.random_writes && c.fuse.symlinks && c.fuse.parallel_dirops);
        assert_eq!(c.fuse.threads, 8);
    }

    #[test]
    fn unknown_keys_are_named_in_the_error() {
        let e = load_str("cache: {capacty: 1GiB}\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("capacty"), "{e}");
        let e = load_str("bogus: 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn set_overrides_with_types() {
        let c = load_str(
            "fuse: {threads: 4}\n",
            &[
                "fuse.random_writes=true",
                "fuse.threads=2",
                "metadata.ttl=5",
            ],
        )
        .unwrap();
        assert!(c.fuse.random_writes);
        assert_eq!(c.fuse.threads, 2);
        assert_eq!(c.metadata.ttl, Duration::from_secs(5));
        assert!(load_str("", &["fuse.random_writez=true"]).is_err());
        assert!(load_str("", &["novalue"]).is_err());
        assert!(load_str("", &["fuse.threads.x=1"]).is_err());
    }

    #[test]
    fn the_merged_text_reloads_to_the_same_config() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("weir.yaml");
        std::fs::write(&f, "fuse: {threads: 4}\n").unwrap();
        let sets = vec!["fuse.symlinks=true".to_string()];
        let (config, text) = Config::load_with_text(Some(&f), &sets).unwrap();
        let again = dir.path().join("merged.yaml");
        std::fs::write(&again, text).unwrap();
        assert_eq!(Config::load(Some(&again), &[]).unwrap(), config);
        assert!(config.fuse.symlinks && config.fuse.threads == 4);
    }

    #[test]
    fn unavailable_features_are_refused_not_ignored() {
        assert!(load_str("write_cache: {enabled: true}\n", &[]).is_err());
    }

    #[test]
    fn cluster_section_parses_and_is_checked() {
        let c = load_str(
            "cluster: {etcd: ['http://127.0.0.1:2379'], name: prod, node_id: n1, lease_ttl: 5s}\nmetrics: {addr: '127.0.0.1:9464'}\n",
            &[],
        )
        .unwrap();
        assert!(c.cluster.enabled());
        let cc = c.cluster.client_config(PathBuf::from("/c/t.json"));
        assert_eq!((cc.cluster.as_str(), cc.node_id.as_str()), ("prod", "n1"));
        assert_eq!(cc.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.metrics.addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(!Config::default().cluster.enabled());
        for (bad, word) in [
            ("cluster: {etcd: ['127.0.0.1:2379']}\n", "http://"),
            (
                "cluster: {etcd: ['http://e:2379'], name: 'a b'}\n",
                "cluster name",
            ),
            (
                "cluster: {etcd: ['http://e:2379'], lease_ttl: 1s}\n",
                "lease_ttl",
            ),
            (
                "cluster: {etcd: ['http://e:2379']}\nmounts: [{path: /, ufs: 'file:///x'}]\n",
                "lives in etcd",
            ),
            ("metrics: {addr: 'nope'}\n", "addr"),
        ] {
            let e = load_str(bad, &[]).unwrap_err().to_string();
            assert!(e.contains(word), "{bad}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }
}
