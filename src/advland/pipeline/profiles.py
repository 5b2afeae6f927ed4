"""Profiles: named variants of params.yaml, each naming only what differs from it.

`advland profile NAME` writes params.yaml = the default with profiles/NAME.yaml laid over
it. The default is params.yaml as committed at git HEAD, never the working file, so a
profile gives the same params whatever was applied before, and `git checkout params.yaml`
brings the default back. A committed params.yaml that this command wrote (its first line
says so) is refused as the default.

How a profile lays over the default:

- a mapping merges key by key, recursively; a key the default lacks is added;
- any other value (a number, a string, a list, null) replaces the default's;
- `key: !replace {...}` replaces the default's mapping whole instead of merging into it
  (`runs: !replace {...}`: the profile's runs and no others);
- `key: !delete` removes the key (an error where the default has no such key).

The result is validated with `parse_params` and written atomically; a profile that fails
leaves params.yaml byte-identical, with a one-line error naming the key.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from advland.core.config import _Loader as ParamsLoader
from advland.core.config import parse_params
from advland.core.errors import ParamsError
from advland.core.io import atomic_outputs

HEADER = "# Written by `advland profile"


class Replace(dict):
    """A mapping tagged `!replace`: it replaces the default's mapping instead of merging."""


DELETE = object()  # the value of a key tagged `!delete`


class _Loader(ParamsLoader):
    """The params loader, plus the overlay tags `!replace` and `!delete`."""


def _replace(loader: _Loader, node: yaml.Node) -> Replace:
    if not isinstance(node, yaml.MappingNode):
        raise yaml.constructor.ConstructorError(
            None, None, "!replace tags a mapping", node.start_mark
        )
    return Replace(loader.construct_mapping(node, deep=True))


def _delete(loader: _Loader, node: yaml.Node) -> object:
    if not isinstance(node, yaml.ScalarNode) or node.value:
        raise yaml.constructor.ConstructorError(
            None, None, "!delete takes no value", node.start_mark
        )
    return DELETE


_Loader.add_constructor("!replace", _replace)
_Loader.add_constructor("!delete", _delete)


def _load(text: str, source: str) -> dict:
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ParamsError(f"{source}:{at} {getattr(err, 'problem', None) or err}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: expected a mapping at the top level")
    return data


def _plain(value: object, where: str) -> object:
    """`value` with its `Replace` mappings as plain dicts; `!delete` inside is an error."""
    if value is DELETE:
        raise ParamsError(f"{where}: !delete inside a value that replaces the default's")
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    return value


def overlay(base: dict, over: dict, where: str = "") -> dict:
    """`over` laid over a copy of `base`, as the module docstring says."""
    out = dict(base)
    for key, value in over.items():
        at = f"{where}{key}"
        if value is DELETE:
            if key not in out:
                raise ParamsError(f"{at}: !delete, but the default has no such key")
            del out[key]
        elif isinstance(value, dict) and not isinstance(value, Replace):
            below = out.get(key)
            out[key] = overlay(below if isinstance(below, dict) else {}, value, f"{at}.")
        else:
            out[key] = _plain(value, at)
    return out


def default_params(root: Path) -> dict:
    """params.yaml as committed at git HEAD in `root`."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "show", "HEAD:./params.yaml"], capture_output=True, text=True
        )
    except OSError as err:
        raise ParamsError(f"git HEAD:params.yaml: cannot run git ({err})") from None
    if done.returncode != 0:
        raise ParamsError(f"git HEAD:params.yaml: cannot read the default ({done.stderr.strip()})")
    if done.stdout.startswith(HEADER):
        raise ParamsError(
            "git HEAD:params.yaml was written by `advland profile`, not the default; "
            "commit the default params.yaml first"
        )
    return _load(done.stdout, "git HEAD:params.yaml")


def profile_path(name: str, root: Path) -> Path:
    """root/profiles/<name>.yaml; an unknown name lists the known ones."""
    path = root / "profiles" / f"{name}.yaml"
    if not re.fullmatch(r"[\w-]+", name) or not path.is_file():
        known = ", ".join(sorted(p.stem for p in (root / "profiles").glob("*.yaml")))
        raise ParamsError(f"profile {name!r}: no profiles/{name}.yaml (profiles: {known})")
    return path


def resolve_profile(name: str, root: Path = Path(".")) -> dict:
    """The full params of profile `name`: the default with profiles/<name>.yaml over it."""
    path = profile_path(name, root)
    source = f"profiles/{name}.yaml"
    try:
        over = _load(path.read_text(), source)
        return overlay(default_params(root), over)
    except ParamsError as err:
        raise ParamsError(str(err) if str(err).startswith(source) else f"{source}: {err}") from None


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:
        return True  # a value used twice is written twice, never as &id001 / *id001


def render(name: str, params: dict) -> str:
    """The text of params.yaml for profile `name`, headed by what wrote it."""
    body = yaml.dump(params, Dumper=_Dumper, sort_keys=False, default_flow_style=None, width=10**6)
    return (
        f"{HEADER} {name}`: params.yaml at git HEAD with profiles/{name}.yaml over it.\n"
        "# Edit the profile, not this file; `git checkout params.yaml` restores the default.\n"
        + body
    )


def apply_profile(name: str, root: Path = Path(".")) -> Path:
    """Write profile `name` to root/params.yaml, validated first; return its path."""
    text = render(name, resolve_profile(name, root))
    source = f"profiles/{name}.yaml"
    try:
        parse_params(_load(text, source), source=source)
    except ParamsError as err:
        raise ParamsError("; ".join(line.strip() for line in str(err).splitlines())) from None
    target = root / "params.yaml"
    with atomic_outputs(target) as (tmp,):
        tmp.write_text(text)
    return target
