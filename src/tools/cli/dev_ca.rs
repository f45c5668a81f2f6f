//! `dev-ca init | sign | server-cert`: the local CA that stands in for Amity's.

use std::path::Path;

use crate::model::pki::{self, DevCa, Validity};

use super::{certs_dir, DevCaCommand};

pub(super) fn dev_ca(config: &Path, cmd: DevCaCommand) -> Result<(), String> {
    match cmd {
        DevCaCommand::Init { force, dir } => {
            let dir = certs_dir(config, dir);
            DevCa::init(&dir, force)
                .and_then(|ca| ca.issue_server_cert(&dir, &pki::default_server_sans()))
                .map_err(|e| e.to_string())?;
            let (crt, key) = DevCa::paths(&dir);
            println!("dev CA: {} (key {})", crt.display(), key.display());
            println!(
                "server certificate for localhost, 127.0.0.1, ::1: {}",
                dir.join("dev-server.crt").display()
            );
            println!("for local testing only: never register the dev CA anywhere real");
            Ok(())
        }
        DevCaCommand::Sign {
            csr,
            days,
            out,
            dir,
        } => {
            let ca = DevCa::load(&certs_dir(config, dir)).map_err(|e| e.to_string())?;
            let csr_pem = pki::read_bounded(&csr)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("{}: cannot read: {e}", csr.display()))?;
            let pem = ca
                .sign_csr(&csr_pem, Validity::days_from_now(days))
                .map_err(|e| format!("{}: {e}", csr.display()))?;
            match out {
                Some(out) => {
                    pki::write_file(&out, pem.as_bytes(), 0o644, true)
                        .map_err(|e| e.to_string())?;
                    eprintln!(
                        "signed certificate written to {} ({days} days)",
                        out.display()
                    );
                }
                None => print!("{pem}"),
            }
            Ok(())
        }
        DevCaCommand::ServerCert { san, dir } => {
            let dir = certs_dir(config, dir);
            let sans = if san.is_empty() {
                pki::default_server_sans()
            } else {
                san
            };
            let (crt, _) = DevCa::load(&dir)
                .and_then(|ca| ca.issue_server_cert(&dir, &sans))
                .map_err(|e| e.to_string())?;
            println!(
                "server certificate for {}: {}",
                sans.join(", "),
                crt.display()
            );
            Ok(())
        }
    }
}
