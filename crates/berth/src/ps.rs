//! `berth ps`: the container's processes, as runc shows them — `ps` output keeping the
//! header and the rows whose PID column is one of the container's, or a JSON array of pids.

use std::process::Command;

use berth_cli::ListFormat;
use libberth::Error;

pub fn print(pids: &[i32], format: ListFormat, args: &[String]) -> Result<(), Error> {
    if format == ListFormat::Json {
        println!("{}", serde_json::to_string(pids).expect("json"));
        return Ok(());
    }
    let args: Vec<String> = if args.is_empty() {
        vec!["-ef".into()]
    } else {
        args.to_vec()
    };
    let out = Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::Unsupported(format!("run ps {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::Unsupported(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{}", filter(&text, pids)?);
    Ok(())
}

/// Keeps the header and the rows whose PID column holds one of `pids`.
pub fn filter(ps_output: &str, pids: &[i32]) -> Result<String, Error> {
    let mut lines = ps_output.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| Error::Unsupported("ps output has no PID column".into()))?;
    let mut out = format!("{header}\n");
    for l in lines {
        let pid = l
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_header_and_container_rows() {
        let ps = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 init\nroot 42 1 0 10:01 ? 00:00:00 sleep 9\n";
        let got = filter(ps, &[42]).unwrap();
        assert_eq!(
            got,
            "UID PID PPID C STIME TTY TIME CMD\nroot 42 1 0 10:01 ? 00:00:00 sleep 9\n"
        );
    }

    #[test]
    fn no_pid_column_is_an_error() {
        assert!(filter("A B\n1 2\n", &[1]).is_err());
    }
}
