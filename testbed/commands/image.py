"""`testbed image build|list|prune|hash`: build (or find cached) guest images, list the cache, remove
what older recipes left in it, print the recipes' hashes."""

from __future__ import annotations

import argparse
import json
import time

from testbed.commands.common import err
from testbed.images import cache, prune
from testbed.images.build import build
from testbed.images.recipe import load_recipe, recipe_hash, recipe_names
from testbed.kernels.ref import parse as parse_kernel


def cmd_image_build(args: argparse.Namespace) -> int:
    names = recipe_names() if args.name == "all" else [args.name]
    kernel = parse_kernel(args.kernel, "testbed image build", "--kernel")
    cache.remove_stale_temps()
    for name in names:
        t = time.monotonic()
        image, cached = build(name, kernel, rebuild=args.rebuild, say=err)
        state = "cached" if cached else "built"
        print(f"{name}: {state} {image.hash} kernel {image.kernel_version} ({image.kernel_package}) in "
              f"{time.monotonic() - t:.1f} s ({image.dir})")
    return 0


def cmd_image_list(args: argparse.Namespace) -> int:
    current = {n: recipe_hash(load_recipe(n)) for n in recipe_names()}
    rows = cache.all_entries()
    if not rows:
        print("no images built yet: run `testbed image build all`")
        return 0
    if args.packages:
        for i in rows:
            print(f"# {i.name} {i.hash} (kernel {i.kernel_version}; packages {i.packages_hash or 'not recorded'})")
            for p, v in i.packages.items():
                print(f"{p}\t{v}")
        return 0
    print(f"{'name':8} {'hash':16} {'kernel':24} {'size':>8}  {'built at':25} {'current':7} kernel ref")
    for i in rows:
        mark = "yes" if current.get(i.name) == i.recipe_hash else "no"
        print(f"{i.name:8} {i.hash:16} {i.kernel_version:24} {i.size_bytes / 2**20:7.0f}M  {i.built_at:25} {mark:7} "
              f"{i.kernel_ref}")
    return 0


def cmd_image_prune(args: argparse.Namespace) -> int:
    """Images of older recipes, the ready snapshots saved from them, and orphaned lock files."""
    items = prune.find()
    removed, busy = ([], []) if args.dry_run else prune.remove(items)
    listed = items if args.dry_run else removed
    total = sum(i.bytes for i in listed)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "removed" if not args.dry_run else "would_remove": [i.to_dict() for i in listed],
                          "busy": [i.to_dict() for i in busy], "bytes": total}, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for i in listed:
        print(f"{verb}: {i.why} ({i.bytes / 2**20:.0f} MB)")
    for i in busy:
        print(f"left alone (another process holds its lock): {i.why}")
    print(f"{verb} {len(listed)} entries, {total / 2**20:.0f} MB" if listed else "nothing to prune: every cached image "
          "is of a current recipe")
    return 0


def cmd_image_hash(args: argparse.Namespace) -> int:
    """The recipes' current hashes, one `name hash` line each: the key a CI cache stores images under."""
    for name in recipe_names():
        print(f"{name} {recipe_hash(load_recipe(name))}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    img = sub.add_parser("image", help="build and list guest images").add_subparsers(dest="image_verb", required=True)
    b = img.add_parser("build", help="build (or find cached) guest images")
    b.add_argument("name", help="client, nas or all")
    b.add_argument("--rebuild", action="store_true", help="build even if a cached image matches the recipe")
    b.add_argument("--kernel", default="default", metavar="REF",
                   help="default, debian:<suite>, debian:<package>=<version> or path:<dir> (as client.kernel)")
    b.set_defaults(func=cmd_image_build)
    ls = img.add_parser("list", help="list cached images")
    ls.add_argument("--packages", action="store_true", help="each image's guest packages and versions")
    ls.set_defaults(func=cmd_image_list)
    pr = img.add_parser("prune", help="remove images of older recipes and the snapshots saved from them")
    pr.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    pr.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    pr.set_defaults(func=cmd_image_prune)
    img.add_parser("hash", help="the recipes' current hashes (a cache key for CI)").set_defaults(func=cmd_image_hash)
