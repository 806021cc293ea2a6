//! Bulk batches from multipart and tar uploads.

use std::process::Command;

use facerec_testkit::{batch_results, http, post_files};

use crate::workload::{Server, Workload, python_tar};

#[test]
fn bulk_batches_from_multipart_and_tar() {
    let w = Workload::new();
    let server = Server::start_with_env(
        &[],
        &[("FACEREC_API_KEY", "k"), ("MAX_FILE_SIZE", "200000")],
    );
    let addr = server.addr.as_str();
    let auth = [("authorization", "Bearer k")];
    w.enroll(addr, &auth);

    // Many files in one multipart body, one of them not an image.
    let picks: Vec<(String, String)> = w.expected.iter().step_by(33).take(30).cloned().collect();
    let blobs: Vec<(String, Vec<u8>)> = picks
        .iter()
        .map(|(s, _)| (format!("{s}.jpg"), w.bytes(s)))
        .collect();
    let mut files: Vec<(&str, &str, &[u8])> = blobs
        .iter()
        .map(|(f, b)| ("images", f.as_str(), b.as_slice()))
        .collect();
    files.push(("images", "notes.txt", b"hello"));
    assert_eq!(
        post_files(addr, "/v1/batches", &files, &[]).status,
        401,
        "batches need the key"
    );
    let r = post_files(addr, "/v1/batches", &files, &auth);
    assert_eq!(r.status, 202, "{}", r.text());
    let job = r.json();
    assert_eq!(
        (job["total"].as_u64(), job["failed"].as_u64()),
        (Some(31), Some(1))
    );
    let id = job["id"].as_str().unwrap().to_string();
    let got = batch_results(addr, &id, &auth);
    assert_eq!(got.len(), 31);
    for (stem, name) in &picks {
        assert_eq!(got.get(&format!("{stem}.jpg")), Some(name), "{stem}");
    }
    assert_eq!(got["notes.txt"], "not_an_image");
    let p = http(addr, "GET", &format!("/v1/batches/{id}"), &auth, b"").json();
    assert_eq!(
        (
            p["total"].as_u64(),
            p["done"].as_u64(),
            p["failed"].as_u64()
        ),
        (Some(31), Some(30), Some(1))
    );
    assert_eq!(p["finished"], true);
    // The job's faces are searchable by job, and can be forgotten (only they).
    let in_job = |auth: &[(&str, &str)]| {
        let r = post_files(
            addr,
            &format!("/v1/faces/search?k=1000&batch={id}"),
            &[("image", "q.jpg", &w.bytes(&picks[0].0))],
            auth,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["faces"].as_array().unwrap().len()
    };
    assert_eq!(in_job(&auth), 30);
    let r = http(
        addr,
        "DELETE",
        &format!("/v1/batches/{id}/faces"),
        &auth,
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["forgotten"], 30);
    assert_eq!(in_job(&auth), 0);

    // A tar body (made by Python's tarfile), with one file over MAX_FILE_SIZE.
    let dir = tempfile::tempdir().unwrap();
    let tar_picks: Vec<(String, String)> = w
        .expected
        .iter()
        .skip(5)
        .step_by(71)
        .take(12)
        .cloned()
        .collect();
    let mut names = Vec::new();
    for (stem, _) in &tar_picks {
        std::fs::write(dir.path().join(format!("{stem}.jpg")), w.bytes(stem)).unwrap();
        names.push(format!("{stem}.jpg"));
    }
    std::fs::write(dir.path().join("huge.jpg"), vec![0xAB; 300_000]).unwrap();
    names.push("huge.jpg".into());
    let tar = python_tar(dir.path(), &names);
    let ct = [("content-type", "application/x-tar"), auth[0]];
    let r = http(addr, "POST", "/v1/batches", &ct, &tar);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        (r.json()["total"].as_u64(), r.json()["failed"].as_u64()),
        (Some(13), Some(1))
    );
    let got = batch_results(addr, r.json()["id"].as_str().unwrap(), &auth);
    for (stem, name) in &tar_picks {
        assert_eq!(got.get(&format!("{stem}.jpg")), Some(name), "{stem}");
    }
    assert_eq!(got["huge.jpg"], "too_large");

    // Zip bodies made by Python's zipfile: written to a file (sizes in the local headers)
    // and to a pipe (sizes in data descriptors after the data, as streaming writers do),
    // deflated, with the same oversized file and a macOS resource fork.
    for (how, script) in [
        (
            "file",
            "zipfile.ZipFile('batch.zip', 'w', zipfile.ZIP_DEFLATED)",
        ),
        ("pipe", "zipfile.ZipFile(Pipe(), 'w', zipfile.ZIP_DEFLATED)"),
    ] {
        let py = format!(
            "import sys, zipfile\n\
             class Pipe:\n\
             \x20   def __init__(self): self.f = open('batch.zip', 'wb')\n\
             \x20   def write(self, b): return self.f.write(b)\n\
             \x20   def flush(self): self.f.flush()\n\
             \x20   def close(self): self.f.close()\n\
             z = {script}\n\
             for n in sys.argv[1:]: z.write(n)\n\
             z.writestr('__MACOSX/._{first}', b'resource fork')\n\
             z.close()\n",
            first = names[0]
        );
        let ok = Command::new("python3")
            .arg("-c")
            .arg(&py)
            .args(&names)
            .current_dir(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "python3 zipfile ({how})");
        let zip = std::fs::read(dir.path().join("batch.zip")).unwrap();
        assert_eq!(
            zip[6] & 8 != 0,
            how == "pipe",
            "data descriptors only when written to a pipe"
        );
        let ct = [("content-type", "application/zip"), auth[0]];
        let r = http(addr, "POST", "/v1/batches", &ct, &zip);
        assert_eq!(r.status, 202, "{how}: {}", r.text());
        assert_eq!(
            (r.json()["total"].as_u64(), r.json()["failed"].as_u64()),
            (Some(13), Some(1)),
            "{how}"
        );
        let got = batch_results(addr, r.json()["id"].as_str().unwrap(), &auth);
        assert_eq!(got.len(), 13, "{how}: {got:?}");
        for (stem, name) in &tar_picks {
            assert_eq!(got.get(&format!("{stem}.jpg")), Some(name), "{how} {stem}");
        }
        assert_eq!(got["huge.jpg"], "too_large", "{how}");
    }

    // The jobs, newest first: the multipart one, the tar one, the two zip ones.
    assert_eq!(http(addr, "GET", "/v1/batches", &[], b"").status, 401);
    let list = http(addr, "GET", "/v1/batches", &auth, b"").json();
    let listed: Vec<&str> = list["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 4, "{list}");
    assert_eq!(listed[3], id, "oldest last");
    assert!(
        list["batches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["finished"] == true)
    );

    // Errors: truncated tar or zip, unknown body type, unknown id.
    assert_eq!(
        http(addr, "POST", "/v1/batches", &ct, &tar[..1000]).status,
        400
    );
    let r = http(
        addr,
        "POST",
        "/v1/batches",
        &[("content-type", "application/zip"), auth[0]],
        b"PK",
    );
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (400, Some("bad_request")),
        "{}",
        r.text()
    );
    let r = http(
        addr,
        "POST",
        "/v1/batches",
        &[("content-type", "application/x-7z-compressed"), auth[0]],
        b"7z",
    );
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (415, Some("unsupported_body"))
    );
    assert_eq!(
        http(addr, "GET", "/v1/batches/nope", &auth, b"").status,
        404
    );
    assert_eq!(
        http(addr, "GET", "/v1/batches/nope/results", &auth, b"").status,
        404
    );
}
