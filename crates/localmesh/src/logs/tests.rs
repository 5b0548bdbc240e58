use super::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("metadata").permissions().mode() & 0o7777
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `line 00042 ...` padded to 64 bytes with its newline.
fn line(n: usize) -> String {
    format!("{:<63}\n", format!("line {n:05} {}", "x".repeat(40)))
}

/// The numbers of the lines in `text`, checking each is whole.
fn numbers(text: &str) -> Vec<usize> {
    assert!(text.is_empty() || text.ends_with('\n'), "ends mid-line: {text:?}");
    text.lines()
        .map(|l| {
            assert_eq!(l.len(), 63, "a whole line: {l:?}");
            l[5..10].parse().expect("line number")
        })
        .collect()
}

#[test]
fn rotates_by_size_keeping_max_files_with_the_newest_lines_current() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("logs/pod-a.log");
    let rotation = Rotation {
        max_size: 1024,
        max_files: 3,
    };
    let mut log = LogFile::open(&path, rotation).expect("open");
    for n in 0..200 {
        log.write(line(n).as_bytes()).expect("write");
    }
    let mut names: Vec<String> = fs::read_dir(dir.path().join("logs"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["pod-a.log", "pod-a.log.1", "pod-a.log.2"]);
    let mut all = Vec::new();
    for p in [rotated(&path, 2), rotated(&path, 1), path.clone()] {
        let len = fs::metadata(&p).expect("metadata").len();
        assert!(len <= 1024, "{} is {len} bytes", p.display());
        assert_eq!(mode(&p), 0o640, "{}", p.display());
        all.extend(numbers(&read(&p)));
    }
    assert_eq!(mode(&dir.path().join("logs")), 0o750);
    // 1024 / 64 = 16 lines a file: 0..16 in the first, ..., 192..200 in the thirteenth (the
    // current one); the two before it are kept, in order.
    assert_eq!(all, (160..200).collect::<Vec<_>>());
    assert_eq!(numbers(&read(&path)), (192..200).collect::<Vec<_>>());
}

#[test]
fn data_larger_than_a_file_is_split_and_one_file_starts_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("big.log");
    let mut log = LogFile::open(
        &path,
        Rotation {
            max_size: 1000,
            max_files: 4,
        },
    )
    .expect("open");
    log.write(&[b'a'; 2500]).expect("write");
    let sizes: Vec<u64> = [rotated(&path, 2), rotated(&path, 1), path.clone()]
        .iter()
        .map(|p| fs::metadata(p).expect("metadata").len())
        .collect();
    assert_eq!(sizes, [1000, 1000, 500]);

    let one = dir.path().join("one.log");
    let mut log = LogFile::open(
        &one,
        Rotation {
            max_size: 1024,
            max_files: 1,
        },
    )
    .expect("open");
    for n in 0..40 {
        log.write(line(n).as_bytes()).expect("write");
    }
    assert!(!rotated(&one, 1).exists());
    assert_eq!(numbers(&read(&one)), (32..40).collect::<Vec<_>>());
}

#[test]
fn opening_appends_deletes_files_beyond_the_count_and_tightens_modes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).expect("mkdir");
    fs::set_permissions(&logs, Permissions::from_mode(0o755)).expect("chmod");
    let path = logs.join("pod-b.log");
    fs::write(&path, line(1)).expect("write");
    fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
    for n in 1..=6 {
        fs::write(rotated(&path, n), line(0)).expect("write");
    }
    fs::write(logs.join("pod-b.log.x"), "not ours").expect("write");
    fs::write(logs.join("pod-bb.log.9"), "another pod's").expect("write");

    let mut log = LogFile::open(
        &path,
        Rotation {
            max_size: 1 << 20,
            max_files: 3,
        },
    )
    .expect("open");
    log.write(line(2).as_bytes()).expect("write");
    assert_eq!(numbers(&read(&path)), [1, 2], "appended to what was there");
    assert_eq!(mode(&path), 0o640);
    assert_eq!(mode(&logs), 0o750);
    assert!(rotated(&path, 1).exists() && rotated(&path, 2).exists());
    for n in 3..=6 {
        assert!(!rotated(&path, n).exists(), ".{n} is beyond --log-max-files 3");
    }
    assert!(logs.join("pod-b.log.x").exists() && logs.join("pod-bb.log.9").exists());
}

#[test]
fn copied_output_rotates_between_whole_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pod-c.log");
    let log = Mutex::new(
        LogFile::open(
            &path,
            Rotation {
                max_size: 1000,
                max_files: 100,
            },
        )
        .expect("open"),
    );
    let (reader, mut writer) = io::pipe().expect("pipe");
    let feeder = std::thread::spawn(move || {
        let text: String = (0..300).map(line).collect();
        // Odd-sized writes: lines arrive in pieces.
        for piece in text.as_bytes().chunks(37) {
            writer.write_all(piece).expect("write");
        }
    });
    copy_lines(reader, &log);
    feeder.join().expect("feeder");
    let mut all = Vec::new();
    for n in (1..100).rev() {
        let p = rotated(&path, n);
        if p.exists() {
            assert!(fs::metadata(&p).expect("metadata").len() <= 1000);
            all.extend(numbers(&read(&p)));
        }
    }
    all.extend(numbers(&read(&path)));
    assert_eq!(all, (0..300).collect::<Vec<_>>(), "every line, whole and in order");
}

#[test]
fn max_size_flag_values() {
    assert_eq!(parse_max_size("10MiB"), Ok(10 << 20));
    assert_eq!(parse_max_size("1KiB"), Ok(1024));
    assert!(parse_max_size("512").unwrap_err().contains("minimum of 1KiB"));
    assert!(parse_max_size("10XB").unwrap_err().contains("unknown size unit"));
    assert_eq!(Rotation::default().max_size, DEFAULT_MAX_SIZE);
    assert_eq!(size_text(DEFAULT_MAX_SIZE), "10MiB");
    assert_eq!(size_text(16 << 10), "16KiB");
    assert_eq!(size_text(1500), "1500");
    assert_eq!(parse_max_size(&size_text(3 << 30)), Ok(3 << 30));
}
