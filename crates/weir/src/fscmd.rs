//! `weir fs`: the admin commands users know from Alluxio, asked of a
//! running daemon over its admin endpoint (`weir_admin`). They work the
//! same in both modes; in cluster mode `mount` and `umount` change the
//! table in etcd, which every daemon of the cluster follows.
//!
//! Which daemon: `--cache-dir DIR`, else `--mount MOUNTPOINT`, else the
//! only one running. Paths are namespace paths (`/data/x`), or paths
//! inside the chosen daemon's mount point (`/mnt/weir/data/x`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use weir_admin::protocol::{EntryKind, Stats};
use weir_admin::{Client, Request, Response};
use weir_namespace::MountSpec;

use crate::output;

/// `weir fs`
#[derive(Debug, Args)]
pub struct FsArgs {
    /// The daemon serving this mount point.
    #[arg(long, global = true, value_name = "MOUNTPOINT")]
    pub mount: Option<PathBuf>,
    /// The daemon with this cache directory.
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print the daemon's answer as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: FsCmd,
}

/// The `weir fs` commands.
#[derive(Debug, Subcommand)]
pub enum FsCmd {
    /// List a directory (or, with -R, everything below it).
    Ls {
        /// Namespace path.
        #[arg(default_value = "/")]
        path: String,
        /// Everything below, not only the directory's entries.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Show one path's attributes (and, for a file, how much is cached).
    Stat {
        /// Namespace path.
        path: String,
    },
    /// Mount storage at a namespace path (cluster mode: for every node).
    Mount {
        /// Namespace path, such as /datasets.
        path: String,
        /// Storage URI: file:///dir, s3://bucket/prefix, gs://..., ...
        uri: String,
        /// A storage option, as in endpoint=http://10.0.0.5:9000 (repeatable).
        #[arg(long = "option", short = 'o', value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// Remove the mount at a namespace path.
    Umount {
        /// The mount path.
        path: String,
    },
    /// List the mount table (and, in cluster mode, the link to etcd and the members).
    Mounts,
    /// How much of each file at or below PATH is cached, and in total.
    CheckCached {
        /// Namespace path of a file or directory.
        path: String,
    },
    /// Preload every file at or below PATH into this node's cache.
    Load {
        /// Namespace path of a file or directory.
        path: String,
        /// Files loaded at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
        parallel: u16,
    },
    /// Drop the cached pages of every file at or below PATH.
    DropCache {
        /// Namespace path of a file or directory.
        path: String,
    },
    /// Sample the daemon twice and say where the time goes, and what to turn.
    Doctor {
        /// Time between the two samples; run the workload meanwhile.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        interval: Duration,
    },
}

/// Runs a `weir fs` command.
pub fn run(args: FsArgs) -> anyhow::Result<()> {
    let client = weir_admin::find_daemon(args.mount.as_deref(), args.cache_dir.as_deref())?;
    let json = args.json;
    let ns = |p: &str| namespace_path(&client, p);
    match args.cmd {
        FsCmd::Ls { path, recursive } => {
            let r = client.call(&Request::List {
                path: ns(&path)?,
                recursive,
            })?;
            let Response::List { entries } = &r else {
                return unexpected(r);
            };
            print(json, &r, || output::list(entries))
        }
        FsCmd::Stat { path } => {
            let path = ns(&path)?;
            let r = client.call(&Request::Stat { path: path.clone() })?;
            let Response::Stat(e) = &r else {
                return unexpected(r);
            };
            let cached = if e.kind == EntryKind::File {
                match client.call(&Request::CheckCached { path })? {
                    Response::Cached(c) => Some(c.total_cached),
                    _ => None,
                }
            } else {
                None
            };
            print(json, &r, || output::stat(e, cached))
        }
        FsCmd::Mount { path, uri, options } => {
            let spec = MountSpec {
                path,
                ufs: uri,
                options: parse_options(&options)?,
            };
            message(json, client.call(&Request::Mount { spec })?)
        }
        FsCmd::Umount { path } => message(json, client.call(&Request::Umount { path })?),
        FsCmd::Mounts => {
            let r = client.call(&Request::Mounts)?;
            let Response::Mounts(m) = &r else {
                return unexpected(r);
            };
            print(json, &r, || output::mounts(m))
        }
        FsCmd::CheckCached { path } => {
            let r = client.call(&Request::CheckCached { path: ns(&path)? })?;
            let Response::Cached(c) = &r else {
                return unexpected(r);
            };
            print(json, &r, || output::cached(c))?;
            errors_fail(&c.errors, "could not be checked")
        }
        FsCmd::Load { path, parallel } => {
            crate::load::run(&client, &ns(&path)?, usize::from(parallel), json)
        }
        FsCmd::DropCache { path } => {
            let r = client.call(&Request::DropCache { path: ns(&path)? })?;
            let Response::Dropped(d) = &r else {
                return unexpected(r);
            };
            print(json, &r, || output::dropped(d))?;
            errors_fail(&d.errors, "could not be dropped")
        }
        FsCmd::Doctor { interval } => doctor(&client, interval, json),
    }
}

/// A namespace path from what the user typed: a path inside the daemon's
/// mount point is taken relative to it.
fn namespace_path(client: &Client, path: &str) -> anyhow::Result<String> {
    if !path.starts_with('/') {
        bail!("{path}: give an absolute namespace path, such as /data/train");
    }
    // Only ask the daemon where it is mounted when it could matter.
    let looks_local = std::path::Path::new(path)
        .components()
        .nth(1)
        .is_some_and(|c| std::path::Path::new("/").join(c).exists());
    if looks_local
        && let Ok(Response::Stats(s)) = client.call(&Request::Stats)
        && let Ok(rest) = std::path::Path::new(path).strip_prefix(&s.daemon.mountpoint)
    {
        return Ok(format!("/{}", rest.display()));
    }
    Ok(path.to_string())
}

fn parse_options(options: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    options
        .iter()
        .map(|o| match o.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--option {o:?}: expected KEY=VALUE, as in region=us-east-1"),
        })
        .collect()
}

fn print(json: bool, r: &Response, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}

fn message(json: bool, r: Response) -> anyhow::Result<()> {
    let Response::TableChanged { message } = &r else {
        return unexpected(r);
    };
    print(json, &r, || format!("{message}\n"))
}

fn errors_fail(errors: &[String], what: &str) -> anyhow::Result<()> {
    for e in errors {
        eprintln!("weir: {e}");
    }
    if !errors.is_empty() {
        bail!("{} paths {what}", errors.len());
    }
    Ok(())
}

pub(crate) fn unexpected<T>(r: Response) -> anyhow::Result<T> {
    bail!(
        "the daemon answered something else than asked: {}",
        serde_json::to_string(&r).unwrap_or_default()
    )
}

fn stats(client: &Client) -> anyhow::Result<Stats> {
    match client.call(&Request::Stats)? {
        Response::Stats(s) => Ok(*s),
        r => unexpected(r),
    }
}

fn doctor(client: &Client, interval: Duration, json: bool) -> anyhow::Result<()> {
    let before = stats(client)?;
    eprintln!(
        "weir: sampling {} for {}; keep the workload running",
        before.daemon.mountpoint,
        humantime::format_duration(interval)
    );
    std::thread::sleep(interval);
    let after = stats(client).context("second sample")?;
    if after.daemon.pid != before.daemon.pid {
        bail!(
            "the daemon was replaced during the sample (pid {} -> {}); run doctor again",
            before.daemon.pid,
            after.daemon.pid
        );
    }
    let d = weir_admin::doctor::diagnose(&before, &after, interval);
    if json {
        let v = serde_json::json!({
            "report": d,
            "bottleneck": d.bottleneck().map(|f| f.area),
            "text": d.to_string(),
            "before": before,
            "after": after,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{d}");
    }
    Ok(())
}
