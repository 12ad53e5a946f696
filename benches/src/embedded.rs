//! `--embedded`: start `lantern serve` on a free port, wait for `GET /health`, and stop
//! it (SIGTERM, then SIGKILL after a grace period) when the benchmark is done.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::http::{join_url, HttpClient};

/// Splits a shell-like string into words: whitespace separates, single and double
/// quotes group, backslash escapes the next character (outside single quotes).
pub fn split_shell(s: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => bail!("--serve-args: unclosed single quote in `{s}`"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x) => cur.push(x),
                            None => bail!("--serve-args: trailing backslash in `{s}`"),
                        },
                        Some(x) => cur.push(x),
                        None => bail!("--serve-args: unclosed double quote in `{s}`"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(x) => cur.push(x),
                    None => bail!("--serve-args: trailing backslash in `{s}`"),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Value of `--name V` or `--name=V` in `args`.
pub fn flag_value(args: &[String], name: &str) -> Option<String> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_string)
        }
    })
}

/// A port the OS says is free right now.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot bind a local port to find a free one")?;
    Ok(l.local_addr().context("reading the bound port")?.port())
}

/// The arguments after `serve`: the user's, plus `--model` (when the bench has one and
/// the user did not pass it), `--host 127.0.0.1` and `--port` (when the user did not
/// pass them; the bench always connects to 127.0.0.1).
/// Returns the arguments and the port.
pub fn serve_args(user: &[String], model: Option<&str>) -> Result<(Vec<String>, u16)> {
    let mut args = user.to_vec();
    if let (Some(m), None) = (model, flag_value(user, "--model")) {
        args.push("--model".into());
        args.push(m.to_string());
    }
    if flag_value(user, "--host").is_none() {
        args.push("--host".into());
        args.push("127.0.0.1".into());
    }
    let port = match flag_value(user, "--port") {
        Some(p) => p
            .parse::<u16>()
            .with_context(|| format!("--serve-args: `--port {p}` is not a port number"))?,
        None => {
            let p = free_port()?;
            args.push("--port".into());
            args.push(p.to_string());
            p
        }
    };
    Ok((args, port))
}

/// A running embedded server.
pub struct EmbeddedServer {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Where its output goes.
    pub log_path: PathBuf,
}

fn log_tail(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            let start = lines.len().saturating_sub(30);
            lines[start..].join("\n")
        }
        Err(_) => String::new(),
    }
}

impl EmbeddedServer {
    /// Starts `bin serve ARGS` and waits until `GET /health` answers 200.
    pub async fn start(
        bin: &Path,
        args: &[String],
        port: u16,
        log_path: Option<PathBuf>,
        health_timeout: Duration,
        client: &HttpClient,
    ) -> Result<Self> {
        let log_path = log_path.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("lantern-bench-serve-{port}.log"))
        });
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("--serve-log: cannot create {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("duplicating the server log handle")?;
        let child = Command::new(bin)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start `{} serve` (set --server-bin to the lantern binary)",
                    bin.display()
                )
            })?;
        let mut server = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
        };
        eprintln!(
            "lantern bench: started `{} serve {}` (pid {}), log {}",
            bin.display(),
            args.join(" "),
            server.child.id().unwrap_or(0),
            server.log_path.display()
        );
        if let Err(e) = server.wait_healthy(health_timeout, client).await {
            let _ = server.stop().await;
            return Err(e);
        }
        Ok(server)
    }

    async fn wait_healthy(&mut self, timeout: Duration, client: &HttpClient) -> Result<()> {
        let url = join_url(&self.base_url, "/health");
        let t0 = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .context("polling the server process")?
            {
                bail!(
                    "the embedded server exited with {status} before it became healthy; last lines of {}:\n{}",
                    self.log_path.display(),
                    log_tail(&self.log_path)
                );
            }
            if let Ok((s, _)) = client.get(&url).await {
                if s.is_success() {
                    eprintln!(
                        "lantern bench: server healthy after {:.1} s",
                        t0.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
            }
            if t0.elapsed() > timeout {
                bail!(
                    "the embedded server did not answer GET /health with 200 within {:.0} s (raise \
                     --health-timeout); last lines of {}:\n{}",
                    timeout.as_secs_f64(),
                    self.log_path.display(),
                    log_tail(&self.log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Sends SIGTERM, waits up to 30 s, then kills.
    pub async fn stop(mut self) -> Result<()> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        #[cfg(unix)]
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped, since
            // try_wait above returned None); it touches no memory of ours.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            if let Ok(r) = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
                r.context("waiting for the embedded server to exit")?;
                return Ok(());
            }
            eprintln!("lantern bench: server ignored SIGTERM for 30 s; killing it");
        }
        self.child
            .kill()
            .await
            .context("killing the embedded server")?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_shell(r#"--model "Qwen/Qwen 7B" --x='a b' c\ d  e"#).unwrap(),
            vec!["--model", "Qwen/Qwen 7B", "--x=a b", "c d", "e"]
        );
        assert_eq!(split_shell("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_shell("''").unwrap(), vec![""]);
        assert!(split_shell("'open").is_err());
    }

    #[test]
    fn adds_model_and_port() {
        let (a, port) = serve_args(&["--max-num-seqs".into(), "8".into()], Some("m")).unwrap();
        assert_eq!(&a[..4], ["--max-num-seqs", "8", "--model", "m"]);
        assert_eq!(flag_value(&a, "--port"), Some(port.to_string()));
        let (a, port) = serve_args(
            &["--model=x".into(), "--port".into(), "9001".into()],
            Some("m"),
        )
        .unwrap();
        assert_eq!(
            a,
            vec!["--model=x", "--port", "9001", "--host", "127.0.0.1"]
        );
        assert_eq!(port, 9001);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn start_fails_fast_when_the_server_exits() {
        // `false serve ...` exits 1 at once: the error names the exit and the log.
        let client = HttpClient::new(None).unwrap();
        let port = free_port().unwrap();
        let err = EmbeddedServer::start(
            Path::new("false"),
            &[],
            port,
            None,
            Duration::from_secs(20),
            &client,
        )
        .await
        .err()
        .unwrap();
        assert!(format!("{err:#}").contains("exited"), "{err:#}");
    }
}
