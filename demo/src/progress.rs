//! What the demo prints: headings, steps, and a progress line while it
//! waits for the cluster to get somewhere.

use std::future::Future;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// A numbered chapter of the story.
pub fn heading(text: &str) {
    println!("\n== {text}");
}

/// A fact worth showing, indented under the heading.
pub fn fact(label: &str, value: impl std::fmt::Display) {
    println!("   {label:<22} {value}");
}

/// Polls `check` every 200 ms until it yields a value, printing a dot per
/// second so the wait is visible; fails after `timeout` naming `what`.
///
/// # Errors
/// When `timeout` passes first.
pub async fn wait<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    let mut dots = 0;
    print!("   ... {what} ");
    let _ = std::io::stdout().flush();
    loop {
        if let Some(value) = check().await {
            println!("done ({:.1}s)", started.elapsed().as_secs_f64());
            return Ok(value);
        }
        if started.elapsed() > timeout {
            println!("gave up");
            anyhow::bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        let seconds = started.elapsed().as_secs();
        if seconds > dots {
            dots = seconds;
            print!(".");
            let _ = std::io::stdout().flush();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
