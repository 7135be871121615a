"""Loading configuration files: models, defaults, and errors that name file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ds01.config.gpu_config import GpuConfig
from ds01.config.images import ImagesConfig, is_image_reference
from ds01.config.limits import BUILTIN_LIMITS, LIMIT_KEYS, Limits, ResourceLimitsConfig
from ds01.config.loader import (
    EMBEDDED_DEFAULT,
    default_images,
    guess_kind,
    key_line,
    load_config,
    load_file,
    parse_config,
)
from ds01.config.policies import POLICY_KEYS
from ds01.config.resolve import source_keys
from ds01.errors import ConfigError, InvalidInput
from support import limits_from, limits_refusal


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# --- error messages: file, line, key ------------------------------------------------------


def test_validation_error_names_file_line_and_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "resource-limits.yaml",
        """
        defaults:
          cpu_limit: 8

        groups:
          msc_students:
            gpu_limit: 1
          phd_students:
            priority: 80
            gpu_limit: -2
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert caught.value.message == (
        f"{path}:9: groups.phd_students.gpu_limit: must be at least 0, got -2"
    )
    assert caught.value.details["problems"] == [
        {
            "line": 9,
            "key": "groups.phd_students.gpu_limit",
            "message": "must be at least 0, got -2",
        }
    ]


def test_every_error_is_reported_in_line_order() -> None:
    error = limits_refusal(
        """
        defaults:
          memory_limit: lots
          pids_limit: 0
        users:
          jane:
            max_containers: -1
            priority: 2000
        """
    )
    lines = error.message.splitlines()
    assert lines == [
        "limits.yaml:2: defaults.memory_limit: invalid size 'lots': expected a byte count "
        "with an optional unit k, m, g or t (1024-based), e.g. '32G'",
        "limits.yaml:3: defaults.pids_limit: must be at least 1, got 0",
        "limits.yaml:6: users.jane.max_containers: must be at least 0, got -1",
        "limits.yaml:7: users.jane.priority: must be at most 1000, got 2000",
    ]


def test_the_layered_sections_check_each_entry_in_one_order() -> None:
    # aggregate:, policies: and reservations: entries pass one shared check before their
    # keys are read: an undefined group first, then (for a policy override) a server-wide
    # key, then a key of the reference implementation; one message per entry.
    error = limits_refusal(
        """
        groups: {phd: {}}
        aggregate:
          groups:
            nope: {memory_max: 9G}
          users:
            jane: {memory_max: 9G, cpu_limit: -1}
        policies:
          groups:
            ghost: {webhook_url: 'https://x.org', cpu_quota: 1}
          users:
            jane: {cpu_quota: 5, webhook_url: 'https://x.org'}
            bob: {grace_period_m: 3}
        reservations:
          groups:
            nope: {max_hours: 1}
          users:
            jane: {max_hours: -1, bogus: 1}
        """
    )
    undefined = "no such group under the top-level groups: section, where membership is defined"
    server_wide = "is one setting for the whole server: set it at the top of the policies: section"
    assert error.message.splitlines() == [
        f"limits.yaml:4: aggregate.groups.nope: {undefined} (defined: phd)",
        "limits.yaml:6: aggregate.users.jane: unknown key 'memory_max'; use memory_limit "
        "(aggregate keys: cpu_limit, memory_limit, pids_limit, disk_limit)",
        f"limits.yaml:9: policies.groups.ghost: {undefined} (defined: phd)",
        f"limits.yaml:11: policies.users.jane: webhook_url {server_wide}",
        "limits.yaml:12: policies.users.bob: unknown key 'grace_period_m'; use "
        f"idle_grace_minutes (policy keys: {', '.join(POLICY_KEYS)})",
        f"limits.yaml:15: reservations.groups.nope: {undefined} (defined: phd)",
        "limits.yaml:17: reservations.users.jane.max_hours: must be more than 0, got -1",
        "limits.yaml:17: reservations.users.jane.bogus: unknown key 'bogus'",
    ]


def test_list_items_are_located_by_position() -> None:
    error = limits_refusal(
        """
        groups:
          lab:
            members:
              - alice
              - "bob smith"
        """
    )
    assert error.message == (
        "limits.yaml:5: groups.lab.members.1: invalid user name 'bob smith': "
        "must be non-empty, without spaces, ':' or '/'"
    )


def test_invalid_mapping_key_is_located_on_its_line() -> None:
    error = limits_refusal(
        """
        users:
          alice: {}
          "bad name": {}
        """
    )
    assert error.message.startswith("limits.yaml:3: users.bad name: invalid user name 'bad name'")


def test_missing_required_key_is_reported_on_the_entry(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "images.yaml",
        """
        images:
          - name: pytorch
            image: aimehub/pytorch-2.8.0-cuda12.6.3
            framework: PyTorch
            description: PyTorch
          - name: broken
            image: ubuntu:24.04
            framework: none
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_file(path)
    assert caught.value.message == f"{path}:6: images.1.description: this key is required"


def test_wrong_shape_is_explained_without_python_names() -> None:
    error = limits_refusal("defaults: 5\n")
    assert error.message == "limits.yaml:1: defaults: expected a mapping (key: value), got 5"
    whole_file = limits_refusal("- a\n- b\n")
    assert whole_file.message == "limits.yaml:1: expected a mapping (key: value), got ['a', 'b']"


# --- unknown, duplicate and malformed input ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "key", "meant"),
    [
        ("default:\n  cpu_limit: 8\n", 1, "default", "defaults"),
        ("defaults:\n  cpu_limit: 8\n  gpus: 2\n", 3, "defaults.gpus", None),
        ("groups:\n  lab:\n    member: [a]\n", 3, "groups.lab.member", "members"),
        ("users:\n  jane:\n    members: [a]\n", 3, "users.jane.members", None),
        (
            "users:\n  jane:\n    max_runtime_h: 4\n",
            3,
            "users.jane.max_runtime_h",
            "max_runtime_hours",
        ),
    ],
)
def test_unknown_keys_are_refused_with_the_key_meant_at_that_place(
    text: str, line: int, key: str, meant: str | None
) -> None:
    error = limits_refusal(text)
    unknown = key.rsplit(".", 1)[-1]
    hint = f". Did you mean {meant!r}?" if meant else ""
    assert error.message == f"limits.yaml:{line}: {key}: unknown key {unknown!r}{hint}"


def test_duplicate_keys_are_refused_with_both_lines() -> None:
    error = limits_refusal(
        """
        groups:
          phd:
            gpu_limit: 2
            priority: 80
            gpu_limit: 4
        """
    )
    assert error.message == (
        "limits.yaml:5: groups.phd.gpu_limit: duplicate key 'gpu_limit' (first given on line 3)"
    )


def test_duplicate_sections_are_refused() -> None:
    error = limits_refusal("users:\n  a: {}\ndefaults: {}\nusers:\n  b: {}\n")
    assert error.message == "limits.yaml:4: users: duplicate key 'users' (first given on line 1)"


def test_same_key_in_different_mappings_is_fine() -> None:
    config = limits_from("groups:\n  a:\n    gpu_limit: 1\n  b:\n    gpu_limit: 2\n")
    assert config.groups["b"].gpu_limit == 2


@pytest.mark.parametrize("bad", ["32X", "lots", "-4G", "0", "1e3", "", "G", "32 GB please"])
def test_bad_memory_strings_are_refused(bad: str) -> None:
    error = limits_refusal(f"defaults:\n  memory_limit: '{bad}'\n")
    assert error.message.startswith("limits.yaml:2: defaults.memory_limit: invalid size")


def test_bad_shm_size_is_refused() -> None:
    error = limits_refusal("users:\n  jane:\n    shm_size: [8G]\n")
    assert error.message.startswith("limits.yaml:3: users.jane.shm_size: invalid size")


@pytest.mark.parametrize("key", ["priority", "allow_full_gpu", "allow_mig"])
def test_null_is_refused_where_it_has_no_meaning(key: str) -> None:
    error = limits_refusal(f"defaults:\n  {key}: null\n")
    assert error.message == (
        f"limits.yaml:2: defaults.{key}: cannot be null (no unlimited value); "
        "remove the key to inherit"
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("defaults:\n  gpu_limit: '2'\n", "expected a number"),
        ("defaults:\n  pids_limit: 1.5\n", "expected a whole number"),
        ("defaults:\n  allow_mig: 1\n", "expected true or false"),
        ("defaults:\n  max_runtime_hours: 0\n", "must be more than 0"),
        ("defaults:\n  idle_timeout_hours: .inf\n", "finite number"),
        ("defaults:\n  cpu_limit: 0\n", "greater than 0"),
        ("defaults:\n  cpu_limit: 2000\n", "at most 1024"),
        ("defaults:\n  max_gpus_per_container: -1\n", "must be at least 0"),
    ],
)
def test_values_of_the_wrong_type_or_range_are_refused(text: str, fragment: str) -> None:
    error = limits_refusal(text)
    assert error.message.startswith("limits.yaml:2: defaults.")
    assert fragment in error.message


def test_yaml_syntax_errors_carry_the_line() -> None:
    error = limits_refusal("defaults:\n  cpu_limit: 8\n  gpu_limit: [1\nusers: {}\n")
    assert error.message.startswith("limits.yaml:4: invalid YAML:")


def test_python_tags_are_refused() -> None:
    error = limits_refusal("defaults: !!python/object/apply:os.system ['true']\n")
    assert error.message.startswith(
        "limits.yaml:1: invalid YAML: could not determine a constructor"
    )


def test_several_documents_are_refused() -> None:
    error = limits_refusal("defaults: {}\n---\nusers: {}\n")
    assert "expected a single document" in error.message


# --- the resource-limits model -------------------------------------------------------------


@pytest.mark.parametrize("text", ["{}\n", "null\n", "---\n", "# the defaults\n{}\n"])
def test_an_empty_mapping_is_an_empty_configuration(text: str) -> None:
    config = parse_config(text, "resource-limits", "limits.yaml")
    assert config == ResourceLimitsConfig()
    assert config.admin_group == "ds01-admin"


@pytest.mark.parametrize("text", ["", "\n", "  \n\n", "# only a comment\n", "# a\n\n# b\n"])
def test_a_file_with_no_document_is_refused_not_read_as_the_defaults(text: str) -> None:
    """What a file rewritten in place holds for a moment must not apply the defaults."""
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "resource-limits", "limits.yaml")
    assert "limits.yaml" in refused.value.message
    assert "write {} in it or remove it" in refused.value.message


def test_sections_and_entries_left_empty_are_accepted() -> None:
    config = limits_from("defaults:\ngroups:\n  lab:\nusers:\n  jane:\n")
    assert config.defaults.declared() == {}
    assert config.groups["lab"].declared() == {}
    assert config.users["jane"].declared() == {}


def test_null_and_missing_are_kept_apart() -> None:
    config = limits_from("users:\n  jane:\n    gpu_limit: null\n    cpu_limit: 4\n")
    jane = config.users["jane"]
    assert jane.declared() == {"gpu_limit": None, "cpu_limit": 4.0}
    assert "memory_limit" not in jane.declared()
    assert jane.gpu_limit is None and jane.memory_limit is None  # same attribute, not the same


def test_sizes_are_stored_normalised() -> None:
    config = limits_from(
        """
        defaults:
          memory_limit: 32768m
          shm_size: 0.5g
        users:
          a:
            memory_limit: 1610612736
        """
    )
    assert config.defaults.memory_limit == "32G"
    assert config.defaults.shm_size == "512M"
    assert config.users["a"].memory_limit == "1.5G"


def test_integers_are_accepted_for_float_limits() -> None:
    config = limits_from("defaults:\n  gpu_limit: 2\n  max_runtime_hours: 48\n  cpu_limit: 8\n")
    assert config.defaults.declared() == {
        "gpu_limit": 2.0,
        "max_runtime_hours": 48.0,
        "cpu_limit": 8.0,
    }


def test_groups_keep_their_order_members_and_unix_group() -> None:
    config = limits_from(
        """
        groups:
          zeta: {}
          alpha:
            members: [alice, bob]
            unix_group: lab-alpha
        admin_group: wheel
        """
    )
    assert list(config.groups) == ["zeta", "alpha"]
    assert config.groups["alpha"].members == ("alice", "bob")
    assert config.unix_group_of("alpha") == "lab-alpha"
    assert config.unix_group_of("zeta") == "zeta"
    assert config.admin_group == "wheel"
    assert "members" not in config.groups["alpha"].declared()


def test_builtin_baseline_sets_every_key() -> None:
    assert set(BUILTIN_LIMITS.declared()) == set(LIMIT_KEYS)
    assert BUILTIN_LIMITS.declared() == {
        "priority": 50,
        "gpu_limit": 1.0,
        "max_gpus_per_container": 1.0,
        "allow_full_gpu": True,
        "allow_mig": True,
        "cpu_limit": 8.0,
        "memory_limit": "32G",
        "shm_size": "8G",
        "disk_limit": "100G",
        "pids_limit": 4096,
        "max_containers": 3,
        "max_runtime_hours": 48.0,
        "idle_timeout_hours": 48.0,
        "gpu_hold_after_stop_minutes": 15.0,
        "borrow": "ask",
    }


def test_limits_are_immutable() -> None:
    section = Limits(gpu_limit=1.0)
    with pytest.raises(ValueError, match="frozen"):
        section.gpu_limit = 2.0  # type: ignore[misc]


# --- images ------------------------------------------------------------------------------


def test_the_embedded_image_registry_is_valid() -> None:
    registry = default_images()
    names = [entry.name for entry in registry.images]
    assert {"pytorch-jupyter", "pytorch", "tensorflow", "base"} <= set(names)
    assert all(is_image_reference(entry.image) and entry.description for entry in registry.images)
    assert registry.allow == ()


def test_images_find_and_allowed_references() -> None:
    registry = parse_config(
        """
        images:
          - name: pytorch
            image: aimehub/pytorch-2.8.0-cuda12.6.3
            framework: PyTorch
            version: "2.8.0"
            phase: stable
            description: PyTorch 2.8.0
          - name: pinned
            image: ubuntu:24.04
            framework: none
            description: Ubuntu
        allow:
          - "ds01-*"
          - "localhost:5000/lab/*:v*"
        """.replace("\n        ", "\n"),
        "images",
        "images.yaml",
    )
    pytorch = registry.find("pytorch")
    assert pytorch is not None and pytorch.version == "2.8.0" and pytorch.phase == "stable"
    assert registry.find("tensorflow") is None
    assert registry.allows_reference("aimehub/pytorch-2.8.0-cuda12.6.3")
    assert registry.allows_reference("aimehub/pytorch-2.8.0-cuda12.6.3:latest")
    assert registry.allows_reference("ubuntu:24.04")
    assert not registry.allows_reference("ubuntu")  # ubuntu:latest is not ubuntu:24.04
    assert registry.allows_reference("ds01-alice-thesis:v3")
    assert registry.allows_reference("ds01-alice-thesis")
    assert registry.allows_reference("localhost:5000/lab/tool:v1")
    assert not registry.allows_reference("localhost:5000/lab/tool:latest")
    assert not registry.allows_reference("evil/ds01-thing")
    assert not registry.allows_reference("DS01-UPPER")  # not a valid reference at all


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("name: PyTorch", "invalid image name 'PyTorch'"),
        ("name: -x", "invalid image name '-x'"),
        ("name: " + "a" * 65, "invalid image name"),
        ("image: Ubuntu", "invalid image reference 'Ubuntu'"),
        ("image: 'ubuntu:'", "invalid image reference"),
        ("image: 'a//b'", "invalid image reference"),
        ("version: 2.8", "expected text"),
        ("tags: [x]", "unknown key"),
    ],
)
def test_invalid_image_entries_are_refused(entry: str, fragment: str) -> None:
    fields = {"name": "ok", "image": "ubuntu:24.04", "framework": "none", "description": "d"}
    key = entry.split(":", 1)[0]
    fields.pop(key, None)
    lines = [f"    {k}: {v}" for k, v in fields.items()] + [f"    {entry}"]
    text = "images:\n  - " + "\n".join(lines).lstrip() + "\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "images", "images.yaml")
    assert fragment in caught.value.message
    assert caught.value.message.startswith("images.yaml:")


def test_duplicate_image_names_are_refused() -> None:
    text = (
        "images:\n"
        "  - {name: a, image: 'ubuntu:22.04', framework: none, description: x}\n"
        "  - {name: a, image: 'ubuntu:24.04', framework: none, description: y}\n"
    )
    with pytest.raises(ConfigError, match=r"images\.yaml:1: images: duplicate image name 'a'"):
        parse_config(text, "images", "images.yaml")


@pytest.mark.parametrize(
    "reference",
    [
        "ubuntu",
        "ubuntu:24.04",
        "aimehub/pytorch-2.8.0-cuda12.6.3",
        "quay.io/jupyter/pytorch-notebook:cuda12-latest",
        "localhost:5000/a/b_c__d:v1.0-rc",
        "registry.example.com/x@sha256:" + "a" * 64,
        "nvcr.io/nvidia/pytorch:24.01-py3",
    ],
)
def test_valid_image_references(reference: str) -> None:
    assert is_image_reference(reference)


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "Ubuntu",
        "ubuntu:",
        ":tag",
        "a//b",
        "-a",
        "a-",
        "ubuntu:24.04\n",
        "a@sha256:12",
        "a" * 256,
    ],
)
def test_invalid_image_references(reference: str) -> None:
    assert not is_image_reference(reference)


# --- files and directories -----------------------------------------------------------------


def test_an_empty_directory_means_embedded_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path)
    assert config.limits == ResourceLimitsConfig()
    assert config.gpus == GpuConfig()
    assert config.images == default_images()
    assert config.sources == {
        "resource-limits": EMBEDDED_DEFAULT,
        "gpu-config": EMBEDDED_DEFAULT,
        "images": EMBEDDED_DEFAULT,
    }


def test_present_files_are_loaded_and_named_in_sources(tmp_path: Path) -> None:
    limits_path = write(tmp_path, "resource-limits.yaml", "defaults:\n  gpu_limit: 2\n")
    gpu_path = write(tmp_path, "gpu-config.yaml", "backend: nvml\n")
    config = load_config(tmp_path)
    assert config.limits.defaults.gpu_limit == 2.0
    assert config.gpus.backend == "nvml"
    assert config.sources == {
        "resource-limits": str(limits_path),
        "gpu-config": str(gpu_path),
        "images": EMBEDDED_DEFAULT,
    }


def test_errors_of_every_file_are_reported_together(tmp_path: Path) -> None:
    limits_path = write(tmp_path, "resource-limits.yaml", "defaults:\n  gpu_limit: -1\n")
    gpu_path = write(tmp_path, "gpu-config.yaml", "backend: cuda\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    lines = caught.value.message.splitlines()
    assert lines[0] == f"{limits_path}:2: defaults.gpu_limit: must be at least 0, got -1"
    assert lines[1].startswith(f"{gpu_path}:1: backend: expected 'simulated' or 'nvml'")
    assert [entry["file"] for entry in caught.value.details["files"]] == [
        str(limits_path),
        str(gpu_path),
    ]


def test_an_unreadable_entry_is_an_error_not_a_default(tmp_path: Path) -> None:
    (tmp_path / "images.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"images\.yaml: cannot read"):
        load_config(tmp_path)


def test_non_utf8_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "resource-limits.yaml"
    path.write_bytes(b"defaults:\n  cpu_limit: \xff\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_file(path)


def test_load_file_guesses_the_kind(tmp_path: Path) -> None:
    limits = load_file(write(tmp_path, "resource-limits.yaml", "{}"))
    assert isinstance(limits, ResourceLimitsConfig)
    assert isinstance(load_file(write(tmp_path, "gpu-config.yaml", "{}")), GpuConfig)
    assert isinstance(load_file(write(tmp_path, "images.yaml", "{}")), ImagesConfig)
    assert isinstance(load_file(write(tmp_path, "new-limits.yaml", "{}")), ResourceLimitsConfig)
    assert isinstance(load_file(write(tmp_path, "other.yaml", "{}"), "images"), ImagesConfig)


@pytest.mark.parametrize("name", ["config.yaml", "gpu-images.yaml"])
def test_an_unclear_name_needs_an_explicit_kind(name: str) -> None:
    with pytest.raises(InvalidInput, match="cannot tell which configuration file"):
        guess_kind(Path(name))


def test_load_file_of_a_missing_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "resource-limits.yaml"
    with pytest.raises(ConfigError, match="file not found"):
        load_file(path)


def test_the_line_of_a_resolved_value_is_found_from_its_source() -> None:
    text = textwrap.dedent(
        """\
        defaults:
          gpu_limit: 1
        groups:
          phd:
            members: [alice]
            gpu_limit: 2
        users:
          bob: {gpu_limit: 3}
        """
    )
    where = {
        source: key_line(text, *keys)
        for source in ("defaults", "group:phd", "user:bob")
        if (keys := source_keys(source, "gpu_limit")) is not None
    }
    assert where == {"defaults": 2, "group:phd": 6, "user:bob": 8}
    assert source_keys("builtin", "gpu_limit") is None
    assert key_line("{not: yaml", "defaults") is None
