//! `secured demo`: a throwaway PKI, a server on loopback, a device that
//! authenticates, sends text and files, and closes, while a second device
//! watches, is notified of the video and downloads it verified; every step
//! printed.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use bytesize::ByteSize;
use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::CliError;
use super::device::load_device_config;
use super::serve::load_server_config;
use crate::client::{ClientSettings, Destination, DeviceClient, OutgoingFile};
use crate::media::detect_file;
use crate::message::{MediaKind, Scope, WatchFrom};
use crate::pki::{self, InitOptions, IssueOptions, PkiPaths, Role, ServerName};
use crate::server::{self, ServerSettings};

const EXAMPLES: &str = "\
Examples:
  secured demo                                  # PKI, server, two devices, text, three files, a download
  secured demo --video-size 2GiB --keep         # a larger file; keep the folder to look at it";

#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub(super) struct DemoArgs {
    /// The text the device sends.
    #[arg(long, default_value = "hello from device-1")]
    text: String,
    /// Size of the generated video file, e.g. 300MiB or 2GiB.
    #[arg(long, value_name = "SIZE", default_value = "300MiB")]
    video_size: ByteSize,
    /// Keep the temporary folder (PKI and data) instead of deleting it.
    #[arg(long)]
    keep: bool,
}

fn other(what: &str) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::Other(format!("{what}: {e}"))
}

/// A one-page PDF document, as a generic file for the demo.
const DEMO_PDF: &[u8] = b"%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 300 100] >> endobj
trailer << /Root 1 0 R >>
%%EOF
";

/// Writes a gradient PNG, a video-sized MP4-framed file of random bytes and
/// a small PDF (a file that is neither an image nor a video).
fn generate_media(dir: &Path, video_size: u64) -> std::io::Result<Vec<OutgoingFile>> {
    std::fs::create_dir_all(dir)?;
    let image_path = dir.join("sunrise.png");
    {
        let (w, h) = (640u32, 400u32);
        let file = std::io::BufWriter::new(std::fs::File::create(&image_path)?);
        let mut encoder = png::Encoder::new(file, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        let mut pixels = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                pixels.extend_from_slice(&[
                    (255 * x / w) as u8,
                    (120 + 100 * y / h) as u8,
                    (255 - 255 * y / h) as u8,
                ]);
            }
        }
        writer
            .write_image_data(&pixels)
            .map_err(std::io::Error::other)?;
    }

    // An 'ftyp' box, then one 'mdat' box (64-bit size) of random bytes:
    // the framing of an MP4 file, at the requested size.
    let video_path = dir.join("holiday.mp4");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&video_path)?);
        let ftyp: &[u8] = b"\0\0\0\x18ftypisom\0\0\x02\0isommp41";
        let header = 16u64;
        let payload = video_size.saturating_sub(ftyp.len() as u64 + header);
        file.write_all(ftyp)?;
        file.write_all(&1u32.to_be_bytes())?;
        file.write_all(b"mdat")?;
        file.write_all(&(payload + header).to_be_bytes())?;
        let mut block = vec![0u8; 1 << 20];
        let mut left = payload;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            getrandom::fill(&mut block[..n]).map_err(std::io::Error::other)?;
            file.write_all(&block[..n])?;
            left -= n as u64;
        }
        file.flush()?;
    }

    let document_path = dir.join("minutes.pdf");
    std::fs::write(&document_path, DEMO_PDF)?;

    let mut files = Vec::new();
    for path in [image_path, video_path, document_path] {
        let detected = detect_file(&path)?;
        files.push(OutgoingFile {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size: std::fs::metadata(&path)?.len(),
            kind: detected.kind,
            // The video is shared with the second device; the rest stays
            // private to device-1.
            scope: if detected.kind == MediaKind::Video {
                Scope::Devices(vec!["device-2".into()])
            } else {
                Scope::Private
            },
            content_type: detected.content_type,
            path,
        });
    }
    Ok(files)
}

pub(super) async fn run(args: DemoArgs) -> Result<(), CliError> {
    let dir = tempfile::Builder::new()
        .prefix("secured-demo-")
        .tempdir()
        .map_err(other("cannot create a temporary folder"))?;
    println!("secured demo in {} (loopback only)", dir.path().display());

    // 1. A private CA with a server and a device certificate.
    let started = Instant::now();
    let paths = PkiPaths::under(dir.path());
    let init_paths = paths.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut written = pki::init(&init_paths, &InitOptions::default(), super::provider())?;
        written.extend(pki::issue_files(
            &init_paths,
            Role::Device,
            "device-2",
            &[],
            &IssueOptions::default(),
            false,
            super::provider(),
        )?);
        Ok::<_, pki::PkiError>(written)
    })
    .await
    .map_err(|e| CliError::Other(format!("key generation stopped: {e}")))??;
    println!(
        "[1/6] PKI: {} files (CA RSA-3072, server, device-1 and device-2 RSA-2048) in {} ms",
        written.len(),
        started.elapsed().as_millis()
    );
    for path in &written {
        println!("        {}", path.display());
    }

    // 2. The server, on an ephemeral loopback port.
    let server_config = load_server_config(
        &paths.cert_file("server"),
        &paths.key_file("server"),
        &paths.ca_cert(),
    )?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(other("cannot listen on 127.0.0.1"))?;
    let addr = listener
        .local_addr()
        .map_err(other("cannot read the listening address"))?;
    let shutdown = CancellationToken::new();
    let settings = ServerSettings {
        data_dir: dir.path().join("data"),
        ..ServerSettings::default()
    };
    let server = tokio::spawn(server::run(
        listener,
        server_config,
        settings,
        shutdown.clone(),
    ));
    println!("[2/6] server listening on {addr}");

    // device-2 watches for new files it may see, and fetches them verified.
    let watcher_config = load_device_config(
        &paths.cert_file("device-2"),
        &paths.key_file("device-2"),
        &paths.ca_cert(),
        ServerName::Dns("localhost".into()),
    )?;
    let inbox = dir.path().join("device-2-inbox");
    std::fs::create_dir_all(&inbox).map_err(other("cannot create device-2's inbox"))?;
    let mut watcher =
        DeviceClient::connect(&addr.to_string(), watcher_config, ClientSettings::default()).await?;
    watcher.watch(WatchFrom::Now).await?;
    let watch_dir = inbox.clone();
    let watching = tokio::spawn(async move {
        let note = watcher
            .next_notice(std::time::Duration::from_secs(30))
            .await?;
        let to = Destination {
            path: watch_dir,
            is_dir: true,
            force: false,
        };
        let fetched = watcher.fetch(note.info.id, &to, |_| {}).await?;
        watcher.close().await?;
        Ok::<_, crate::client::ClientError>((note, fetched))
    });
    println!("      device-2 connected and watches for files shared with it");

    // 3. The device: mutual authentication.
    let device_config = load_device_config(
        &paths.cert_file("device-1"),
        &paths.key_file("device-1"),
        &paths.ca_cert(),
        ServerName::Dns("localhost".into()),
    )?;
    let started = Instant::now();
    let mut client =
        DeviceClient::connect(&addr.to_string(), device_config, ClientSettings::default()).await?;
    println!(
        "[3/6] handshake: device-1 and server {:?} authenticated each other in {} ms \
         (RSA-OAEP pre-master, RSA-PSS proof, HKDF-SHA256 keys, Finished both ways; {} RSA)",
        client.server().name(),
        started.elapsed().as_millis(),
        super::provider().name
    );

    // 4. Text over the record layer, then a clean close.
    let ack = client.send_text(&args.text).await?;
    println!(
        "[4/6] sent {:?} in a SECX record (AES-256-CBC + HMAC-SHA256); server answered ACK_ {}",
        args.text, ack.status
    );

    // 5. An image, a video-sized file and a document as signed IMGX streams.
    let media = dir.path().join("media");
    let video_size = args.video_size.as_u64();
    let gen_dir = media.clone();
    let files = tokio::task::spawn_blocking(move || generate_media(&gen_dir, video_size))
        .await
        .map_err(|e| CliError::Other(format!("generating the demo files stopped: {e}")))?
        .map_err(other("cannot generate the demo files"))?;
    println!(
        "[5/6] sending a generated image, a {} video (shared with device-2) and a PDF document (kind file), signed with RSA-PSS, in 64 KiB records:",
        indicatif::HumanBytes(args.video_size.as_u64())
    );
    let mut reports = Vec::with_capacity(files.len());
    super::files::send_over(&mut client, &files, false, &mut reports).await?;
    client.close().await?;
    println!("      session closed with ENDD in both directions");

    // 6. device-2 was told of the video and downloaded it, verified.
    let (note, fetched) = watching
        .await
        .map_err(|e| CliError::Other(format!("device-2 stopped: {e}")))??;
    println!(
        "[6/6] device-2 was notified of {} from {} (event {}) and fetched it, verified:",
        note.info.stored_as, note.info.owner, note.event
    );
    println!(
        "      {}",
        super::fetch::report(&fetched, false).replace('\n', "\n      ")
    );

    shutdown.cancel();
    let _ = server.await;
    super::files::check_reports(&reports)?;
    if args.keep {
        let kept = dir.keep();
        println!(
            "kept {} (the server's data in data/, device-2's download in device-2-inbox/)",
            kept.display()
        );
    } else {
        println!(
            "removed {} (pass --keep to look at it)",
            dir.path().display()
        );
    }
    Ok(())
}
