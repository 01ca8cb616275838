//! Namespace path helpers: normalisation and joining, refusing any path that
//! could climb out of the tree it names.

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path must start with `/`.
    #[error("must be an absolute path starting with '/'")]
    NotAbsolute,
    /// The path contains a `..` component.
    #[error("must not contain '..'")]
    DotDot,
    /// The path contains a NUL byte.
    #[error("must not contain NUL bytes")]
    Nul,
}

/// Normalises an absolute namespace path: collapses `//` and `.`, drops a
/// trailing `/`, and refuses `..` rather than resolving it.
pub fn normalize(path: &str) -> Result<String, PathError> {
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut out = String::with_capacity(path.len());
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => return Err(PathError::DotDot),
            c => {
                out.push('/');
                out.push_str(c);
            }
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// `dir` joined with one `name`.
pub fn child(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// `base` joined with a relative path (`""` gives `base`).
pub fn join(base: &str, rel: &str) -> String {
    match (base, rel) {
        (b, "") => b.to_string(),
        ("", r) => r.to_string(),
        (b, r) => format!("{}/{}", b.trim_end_matches('/'), r),
    }
}

/// The parent of a normalised path (`/` for `/`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Splits a normalised path into parent and final name.
pub fn split_name(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (parent(path), &path[i + 1..]),
        None => ("/", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalises() {
        assert_eq!(normalize("/").unwrap(), "/");
        assert_eq!(normalize("//a/./b//").unwrap(), "/a/b");
        assert_eq!(normalize("/a/b/").unwrap(), "/a/b");
        assert_eq!(normalize("a"), Err(PathError::NotAbsolute));
        assert_eq!(normalize("/a/../b"), Err(PathError::DotDot));
        assert_eq!(normalize("/a\0"), Err(PathError::Nul));
    }

    #[test]
    fn joins_and_splits() {
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
        assert_eq!(join("x", ""), "x");
        assert_eq!(join("", "y"), "y");
        assert_eq!(join("x", "y"), "x/y");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(split_name("/a/b"), ("/a", "b"));
    }

    proptest! {
        #[test]
        fn normalised_paths_are_clean_and_stable(parts in proptest::collection::vec("[a-z.]{0,3}", 0..6)) {
            let p = format!("/{}", parts.join("/"));
            if let Ok(n) = normalize(&p) {
                prop_assert!(n.starts_with('/'));
                prop_assert!(!n.contains("//"));
                prop_assert!(!n.split('/').any(|c| c == ".." || c == "."));
                prop_assert_eq!(normalize(&n).unwrap(), n);
            } else {
                prop_assert!(parts.iter().any(|c| c == ".."));
            }
        }
    }
}
