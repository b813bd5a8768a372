"""The corpus builder reads audio out of the second batch's game archives.

Tiny synthetic archives of each kind (zip/pk3, OpenTTD's opensfx.cat, OpenClonk's
scrambled c4group with a nested folder) are written to a tmp dir; the readers must
yield the right names and bytes.  No network, no real packages.
"""

import gzip
import io
import struct
import wave
import zipfile

import pytest


@pytest.fixture(scope="module")
def bc(build_corpus):
    return build_corpus


def tiny_wav(n: int, value: int = 1000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(struct.pack("<h", value) * n)
    return buf.getvalue()


# ----------------------------------------------------------------------------- zip
def test_zip_members_are_yielded_lazily_with_their_bytes(bc, tmp_path):
    z = tmp_path / "usr/share/games/ufoai/base/0snd.pk3"
    z.parent.mkdir(parents=True)
    a, b = tiny_wav(800), tiny_wav(400, -5)
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("sound/ambience/rain.wav", a)
        f.writestr("sound/readme.txt", b"not audio")
        f.writestr("sound/footsteps/grass1.wav", b)
    got = {name: load() for name, load in bc.read_zip(z)}
    assert got == {"sound/ambience/rain.wav": a, "sound/readme.txt": b"not audio",
                   "sound/footsteps/grass1.wav": b}
    # iter_audio names them 'archive!inner' and keeps only audio
    paths = {p: load() for p, load in bc.iter_audio(tmp_path)}
    assert paths == {"usr/share/games/ufoai/base/0snd.pk3!sound/ambience/rain.wav": a,
                     "usr/share/games/ufoai/base/0snd.pk3!sound/footsteps/grass1.wav": b}
    assert bc.keep_file("usr/share/games/ufoai/base/0snd.pk3", "ufoai-sound")
    assert bc.keep_file("usr/share/games/0ad/mods/public/public.zip", "0ad-data")
    assert not bc.keep_file("usr/share/games/0ad/mods/mod/mod.zip", "0ad-data")


# ----------------------------------------------------------------------- opensfx
def make_opensfx(entries: list[tuple[bytes, bytes]], flag: bool = True) -> bytes:
    """(name, wav) pairs -> catalogue: (offset, size of the wav) table, then
    name-length byte, name, wav (+ a few padding bytes, as opensfx has) per entry;
    an empty wav makes an empty slot (size 0)."""
    table_len = 8 * len(entries)
    table, body, off = b"", b"", table_len
    for name, wav in entries:
        blob = b"" if not wav else bytes([len(name)]) + name + wav + b"\0" * 5
        table += struct.pack("<II", off | (0x80000000 if flag else 0), len(wav))
        body += blob
        off += len(blob)
    return table + body


def test_opensfx_catalogue_entries(bc, tmp_path):
    w1, w2 = tiny_wav(500), tiny_wav(300, 7)
    cat = make_opensfx([(b'"Ship horn". By someone. License: CC0.\0', w1),
                        (b"", b""),
                        (b'"Level crossing". Original "x.wav"', w2)])
    entries = list(bc.read_opensfx_cat(cat))
    assert [e[1] for e in entries] == [w1, b"", w2]
    assert entries[0][0] == '"Ship horn". By someone. License: CC0.'  # NUL dropped
    # unflagged offsets read the same
    assert [e[1] for e in bc.read_opensfx_cat(make_opensfx([(b"a", w1)], flag=False))] == [w1]

    f = tmp_path / "usr/share/games/openttd/baseset/opensfx/opensfx.cat"
    f.parent.mkdir(parents=True)
    f.write_bytes(cat)
    got = {p.split("!", 1)[1]: load() for p, load in bc.iter_audio(tmp_path)}
    assert got == {"00_ship_horn.wav": w1, "01_clip.wav": b"", "02_level_crossing.wav": w2}


def test_opensfx_rejects_garbage(bc):
    with pytest.raises(ValueError):
        list(bc.read_opensfx_cat(b"\x03\x00\x00\x00" + b"\x00" * 20))


# ----------------------------------------------------------------------- c4group
def scramble(buf: bytes) -> bytes:
    return bc_unscramble(buf)  # MemScramble is its own inverse


def bc_unscramble(buf: bytes) -> bytes:
    b = bytearray(x ^ 237 for x in buf)
    for i in range(0, len(b) - 2, 3):
        b[i], b[i + 2] = b[i + 2], b[i]
    return bytes(b)


def make_group(files: list[tuple[str, bytes, bool]], scramble_entries: bool) -> bytes:
    """Raw (not gzipped) c4group: scrambled 204-byte header, 316-byte entries,
    then the data; (name, payload, is_child_group)."""
    head = bytearray(204)
    head[:24] = b"RedWolf Design GrpFolder"
    struct.pack_into("<iii", head, 28, 1, 2, len(files))
    table, data = b"", b""
    for name, payload, child in files:
        entry = bytearray(316)
        entry[: len(name)] = name.encode()
        struct.pack_into("<5i", entry, 260, 0, int(child), len(payload), 0, len(data))
        table += scramble(bytes(entry)) if scramble_entries else bytes(entry)
        data += payload
    return scramble(bytes(head)) + table + data


def c4_file(raw: bytes) -> bytes:
    gz = gzip.compress(raw)
    return b"\x1e\x8c" + gz[2:]  # c4group's changed gzip magic


@pytest.mark.parametrize("scrambled", [True, False])
def test_c4group_with_a_nested_folder(bc, tmp_path, scrambled):
    w1, w2, w3 = tiny_wav(200), tiny_wav(250, 3), tiny_wav(100, -9)
    inner = make_group([("WindLoop.ogg", w2, False), ("Thunder1.wav", w3, False)], scrambled)
    outer = make_group([("Rain.wav", w1, False), ("Environment.ocg", inner, True),
                        ("Title.txt", b"hello", False)], scrambled)
    got = dict(bc.read_c4group(c4_file(outer)))
    assert got == {"Rain.wav": w1, "Environment.ocg/WindLoop.ogg": w2,
                   "Environment.ocg/Thunder1.wav": w3, "Title.txt": b"hello"}

    f = tmp_path / "usr/share/games/openclonk/Sound.ocg"
    f.parent.mkdir(parents=True)
    f.write_bytes(c4_file(outer))
    paths = {p: load() for p, load in bc.iter_audio(tmp_path)}
    assert paths == {"usr/share/games/openclonk/Sound.ocg!Rain.wav": w1,
                     "usr/share/games/openclonk/Sound.ocg!Environment.ocg/WindLoop.ogg": w2,
                     "usr/share/games/openclonk/Sound.ocg!Environment.ocg/Thunder1.wav": w3}
    assert bc.keep_file("usr/share/games/openclonk/Sound.ocg", "openclonk-data")


def test_c4group_rejects_a_bad_header(bc):
    with pytest.raises(ValueError):
        list(bc.read_c4group(c4_file(b"\x00" * 600)))


def test_a_broken_archive_does_not_stop_the_package(bc, tmp_path):
    f = tmp_path / "usr/share/games/openclonk/Sound.ocg"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"garbage")
    (tmp_path / "x.wav").write_bytes(tiny_wav(100))
    assert [p for p, _ in bc.iter_audio(tmp_path)] == ["x.wav"]
