//! Turns a UFS URI plus user options into an OpenDAL service configuration.
//!
//! The option keys are OpenDAL's own configuration keys for the service
//! (for S3: `endpoint`, `region`, `access_key_id`, `secret_access_key`, ...),
//! so users can look them up in the OpenDAL documentation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Result, UfsError};

/// Which storage a URI names, with what OpenDAL needs to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// OpenDAL scheme (`fs`, `s3`, `gcs`, `azblob`, `webdav`, `http`).
    pub scheme: &'static str,
    /// OpenDAL configuration, user options merged over the URI's parts.
    pub config: BTreeMap<String, String>,
    /// For `file://`, the local directory; `None` for remote storage.
    pub local_root: Option<PathBuf>,
}

/// Parses `uri` and merges `options` into the OpenDAL configuration.
///
/// Options given explicitly win over values taken from the URI; environment
/// variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, ...) fill in what neither gave.
pub fn parse(uri: &str, options: &BTreeMap<String, String>) -> Result<Target> {
    let url =
        url::Url::parse(uri).map_err(|e| UfsError::Config(format!("bad URI {uri:?}: {e}")))?;
    let host = url.host_str().unwrap_or("").to_string();
    let path = url.path().trim_matches('/').to_string();
    let mut config = BTreeMap::new();
    let (scheme, local_root) = match url.scheme() {
        "file" => {
            if !host.is_empty() && host != "localhost" {
                return Err(UfsError::Config(format!(
                    "bad URI {uri:?}: file:// URIs take an absolute path, as in file:///srv/data"
                )));
            }
            let root = PathBuf::from(format!("/{path}"));
            config.insert("root".into(), root.display().to_string());
            ("fs", Some(root))
        }
        "s3" => {
            require_host(uri, &host, "bucket")?;
            config.insert("bucket".into(), host);
            config.insert("root".into(), format!("/{path}"));
            fill_from_env(
                &mut config,
                "endpoint",
                &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
            );
            fill_from_env(&mut config, "region", &["AWS_REGION", "AWS_DEFAULT_REGION"]);
            ("s3", None)
        }
        "gs" | "gcs" => {
            require_host(uri, &host, "bucket")?;
            config.insert("bucket".into(), host);
            config.insert("root".into(), format!("/{path}"));
            ("gcs", None)
        }
        "azblob" | "wasb" | "wasbs" => {
            require_host(uri, &host, "container")?;
            config.insert("container".into(), host);
            config.insert("root".into(), format!("/{path}"));
            ("azblob", None)
        }
        "webdav" | "webdavs" => {
            require_host(uri, &host, "host")?;
            let proto = if url.scheme() == "webdavs" {
                "https"
            } else {
                "http"
            };
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            config.insert("endpoint".into(), format!("{proto}://{host}{port}"));
            config.insert("root".into(), format!("/{path}"));
            ("webdav", None)
        }
        "http" | "https" => {
            require_host(uri, &host, "host")?;
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            config.insert(
                "endpoint".into(),
                format!("{}://{host}{port}", url.scheme()),
            );
            config.insert("root".into(), format!("/{path}"));
            ("http", None)
        }
        "hdfs" => {
            return Err(UfsError::Config(format!(
                "{uri:?}: hdfs:// is not compiled into this build of weir (it needs a JVM-free HDFS client we have not vetted yet)"
            )));
        }
        other => {
            return Err(UfsError::Config(format!(
                "bad URI {uri:?}: unknown scheme {other:?} (known: file, s3, gs, azblob, webdav, http, https)"
            )));
        }
    };
    if scheme == "s3" && !config.contains_key("region") && !options.contains_key("region") {
        // OpenDAL refuses to build an S3 operator without a region; S3-compatible
        // servers ignore it, and AWS redirects, so the conventional default is safe.
        config.insert("region".into(), "us-east-1".into());
    }
    for (k, v) in options {
        if k == "root" || k == "bucket" || k == "container" {
            return Err(UfsError::Config(format!(
                "option {k:?} comes from the URI {uri:?}; put it there instead"
            )));
        }
        config.insert(k.clone(), v.clone());
    }
    Ok(Target {
        scheme,
        config,
        local_root,
    })
}

fn require_host(uri: &str, host: &str, what: &str) -> Result<()> {
    if host.is_empty() {
        return Err(UfsError::Config(format!(
            "bad URI {uri:?}: missing the {what} name"
        )));
    }
    Ok(())
}

fn fill_from_env(config: &mut BTreeMap<String, String>, key: &str, vars: &[&str]) {
    if let Some(v) = vars
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
    {
        config.insert(key.to_string(), v);
    }
}

/// The URI with any user info removed, for logs and error messages.
pub fn redact(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Err(_) => uri.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_uri_gives_local_root() {
        let t = parse("file:///srv/data/", &BTreeMap::new()).unwrap();
        assert_eq!(t.scheme, "fs");
        assert_eq!(t.local_root, Some(PathBuf::from("/srv/data")));
        assert_eq!(t.config["root"], "/srv/data");
    }

    #[test]
    fn s3_uri_splits_bucket_and_prefix_and_keeps_options() {
        let t = parse(
            "s3://bucket/some/prefix",
            &opts(&[
                ("endpoint", "http://127.0.0.1:9000"),
                ("region", "eu-west-1"),
            ]),
        )
        .unwrap();
        assert_eq!(t.scheme, "s3");
        assert_eq!(t.config["bucket"], "bucket");
        assert_eq!(t.config["root"], "/some/prefix");
        assert_eq!(t.config["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(t.config["region"], "eu-west-1");
    }

    #[test]
    fn bad_uris_are_config_errors() {
        for bad in [
            "not a uri",
            "ftp://x/y",
            "s3:///nobucket",
            "file://host/x",
            "hdfs://nn/x",
        ] {
            let e = parse(bad, &BTreeMap::new()).unwrap_err();
            assert!(matches!(e, UfsError::Config(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn root_option_is_refused() {
        let e = parse("s3://b/p", &opts(&[("root", "/x")])).unwrap_err();
        assert!(e.to_string().contains("root"));
    }

    #[test]
    fn redact_drops_credentials() {
        assert_eq!(redact("s3://key:secret@bucket/p"), "s3://bucket/p");
    }
}
