//! The page frame, small formatting helpers and the embedded assets. Templates are maud's
//! `html!`: compiled into the binary, and every `(value)` spliced into them is HTML-escaped
//! (record bytes are hostile input); nothing here uses `PreEscaped` on data.

use maud::{DOCTYPE, Markup, html};

/// The console's stylesheet, served as `/console/style.css`.
pub const CSS: &str = include_str!("style.css");
/// The console's icon, served as `/favicon.svg` (named by every page, so that browsers do not
/// ask for a missing `/favicon.ico`).
pub const ICON: &str = include_str!("favicon.svg");
/// The console's script, served as `/console/app.js`.
pub const JS: &str = include_str!("app.js");

/// Headers every console page carries: only this origin's style and script run (so even a
/// record that got past escaping could not run one), no framing, no caching.
pub const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                       connect-src 'self'; \
                       form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A whole page: title, navigation, `body`.
pub fn page(node_id: i32, read_only: bool, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Vltava" }
                link rel="icon" href="/favicon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/console/style.css";
                script src="/console/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/" { "Vltava" }
                    nav {
                        a href="/" { "Cluster" }
                        a href="/topics" { "Topics" }
                        a href="/groups" { "Consumer groups" }
                        a href="/metrics" { "Metrics" }
                    }
                    span.node {
                        "broker " (node_id)
                        @if read_only { " · read-only" }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A list of broker ids, `—` when empty.
pub fn ids(v: &[i32]) -> String {
    if v.is_empty() {
        return "—".into();
    }
    v.iter().map(i32::to_string).collect::<Vec<_>>().join(", ")
}

/// Bytes in B, KiB, MiB or GiB.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A timestamp in ms since the epoch as UTC `YYYY-MM-DD HH:MM:SS.mmm`.
pub fn utc(ms: i64) -> String {
    if ms < 0 {
        return "—".into();
    }
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spliced_values_are_escaped() {
        let hostile = "<script>alert(1)</script>\"'&";
        let out = page(
            1,
            false,
            hostile,
            html! { pre { (hostile) } a href=(hostile) { "x" } },
        )
        .into_string();
        assert!(!out.contains("<script>alert"), "{out}");
        assert!(
            out.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"),
            "{out}"
        );
        // The only script element is the embedded one.
        assert_eq!(out.matches("<script").count(), 1, "{out}");
    }

    #[test]
    fn formats() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(utc(-1), "—");
        assert_eq!(size(10), "10 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(ids(&[1, 2]), "1, 2");
        assert_eq!(ids(&[]), "—");
    }
}
