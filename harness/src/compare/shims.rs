//! The shims to compare, from the command line: each `--shim` checked and canonicalised, its
//! `--shim-env` and `--profile` (all or numbered), and the names shown on the page.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::CompareError;
use crate::scenario::Profile;

/// One shim to run, after validation.
#[derive(Debug, Clone)]
pub struct ShimSpec {
    /// The name on the page: the file name, disambiguated.
    pub name: String,
    /// The binary (canonical path).
    pub path: PathBuf,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Its profile and the file it came from.
    pub profile: Option<(PathBuf, Profile)>,
}

/// Checks every `--shim` (exists, regular file, executable), names them and splits
/// `--shim-env` and `--profile` per shim.
pub fn shim_specs(
    paths: &[PathBuf],
    env: &[String],
    profiles: &[String],
) -> Result<Vec<ShimSpec>, CompareError> {
    if paths.len() < 2 {
        return Err(CompareError::Option {
            option: "--shim",
            why: format!("give at least two shims to compare (got {})", paths.len()),
        });
    }
    let mut specs = Vec::new();
    for p in paths {
        let shim_err = |why: &str| CompareError::Shim {
            path: p.display().to_string(),
            why: why.to_string(),
        };
        let meta = std::fs::metadata(p).map_err(|e| {
            shim_err(&if e.kind() == std::io::ErrorKind::NotFound {
                "not found".to_string()
            } else {
                e.to_string()
            })
        })?;
        if !meta.is_file() {
            return Err(shim_err("not a regular file"));
        }
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(shim_err("not executable (chmod +x it)"));
        }
        specs.push(ShimSpec {
            name: String::new(),
            path: std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
            env: vec![],
            profile: None,
        });
    }
    for kv in env {
        let (target, kv2) = shim_index("--shim-env", kv, specs.len())?;
        let (k, v) = kv2
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| CompareError::Option {
                option: "--shim-env",
                why: format!("`{kv}`: expected K=V or N:K=V"),
            })?;
        for (i, s) in specs.iter_mut().enumerate() {
            if target.is_none_or(|t| t == i) {
                s.env.push((k.to_string(), v.to_string()));
            }
        }
    }
    for arg in profiles {
        let (target, file) = shim_index("--profile", arg, specs.len())?;
        let path = PathBuf::from(file);
        let profile = Profile::load(&path).map_err(CompareError::Profile)?;
        for (i, s) in specs.iter_mut().enumerate() {
            if target.is_none_or(|t| t == i) {
                s.profile = Some((path.clone(), profile.clone()));
            }
        }
    }
    let names = display_names(&specs);
    for (s, n) in specs.iter_mut().zip(names) {
        s.name = n;
    }
    Ok(specs)
}

/// Splits `N:rest` (the N-th shim, 1-based, returned 0-based) from a plain `rest` (every shim).
fn shim_index<'a>(
    option: &'static str,
    arg: &'a str,
    shims: usize,
) -> Result<(Option<usize>, &'a str), CompareError> {
    match arg.split_once(':') {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            let i: usize = n.parse().unwrap_or(0);
            if i == 0 || i > shims {
                return Err(CompareError::Option {
                    option,
                    why: format!("`{arg}`: shim {n} does not exist (1..={shims})"),
                });
            }
            Ok((Some(i - 1), rest))
        }
        _ => Ok((None, arg)),
    }
}

/// Names for the page: the file name; with extra environment, the `K=V`s in brackets; and when
/// two are still the same, `#N` (the shim's place on the command line).
fn display_names(specs: &[ShimSpec]) -> Vec<String> {
    let base: Vec<String> = specs
        .iter()
        .map(|s| {
            let mut n = s
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_else(|| s.path.display().to_string());
            if !s.env.is_empty() {
                let kv: Vec<String> = s.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                n.push_str(&format!(" [{}]", kv.join(" ")));
            }
            n
        })
        .collect();
    base.iter()
        .enumerate()
        .map(|(i, n)| {
            if base.iter().filter(|m| *m == n).count() > 1 {
                format!("{n} #{}", i + 1)
            } else {
                n.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, env: &[(&str, &str)]) -> ShimSpec {
        ShimSpec {
            name: String::new(),
            path: path.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            profile: None,
        }
    }

    #[test]
    fn names_are_file_names_disambiguated() {
        let names = display_names(&[
            spec("/usr/bin/containerd-shim-runc-v2", &[]),
            spec("/opt/x/containerd-shim-runc-v2", &[]),
            spec("/t/containerd-shim-reaper-v2", &[]),
            spec(
                "/t/containerd-shim-faulty-v2",
                &[("FAULTY_SHIM", "no-stdout")],
            ),
        ]);
        assert_eq!(
            names,
            [
                "containerd-shim-runc-v2 #1",
                "containerd-shim-runc-v2 #2",
                "containerd-shim-reaper-v2",
                "containerd-shim-faulty-v2 [FAULTY_SHIM=no-stdout]",
            ]
        );
    }

    #[test]
    fn shim_env_goes_to_the_numbered_shim_or_to_all() {
        let t = std::env::current_exe().unwrap();
        let specs = shim_specs(
            &[t.clone(), t.clone()],
            &["2:A=1".into(), "B=x:y".into()],
            &[],
        )
        .unwrap();
        assert_eq!(specs[0].env, [("B".to_string(), "x:y".to_string())]);
        assert_eq!(
            specs[1].env,
            [
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x:y".to_string())
            ]
        );
        assert_ne!(specs[0].name, specs[1].name);
        let e = shim_specs(&[t.clone(), t.clone()], &["3:A=1".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("shim 3 does not exist"), "{e}");
        let e = shim_specs(&[t.clone(), t.clone()], &["novalue".into()], &[]).unwrap_err();
        assert!(e.to_string().contains("`novalue`"), "{e}");
        let e = shim_specs(&[t.clone(), "/nonexistent/shim-x".into()], &[], &[]).unwrap_err();
        assert_eq!(e.to_string(), "shim `/nonexistent/shim-x`: not found");
        let e = shim_specs(&[t], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("at least two"), "{e}");
    }

    #[test]
    fn profiles_go_to_the_numbered_shim_and_bad_ones_are_named() {
        let t = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("p.yaml");
        std::fs::write(&good, "xfail:\n  - lifecycle/sigterm\n").unwrap();
        let arg = format!("2:{}", good.display());
        let specs = shim_specs(&[t.clone(), t.clone()], &[], &[arg]).unwrap();
        assert!(specs[0].profile.is_none());
        let (path, prof) = specs[1].profile.as_ref().unwrap();
        assert_eq!(path, &good);
        assert!(prof.is_xfail("lifecycle/sigterm"));
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "xfail: [a]\nbogus: 1\n").unwrap();
        let e = shim_specs(&[t.clone(), t], &[], &[bad.display().to_string()]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("--profile: ") && msg.contains("bad.yaml:"),
            "{msg}"
        );
    }
}
