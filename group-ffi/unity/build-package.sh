#!/usr/bin/env bash
# Builds the Unity package of the C# wrapper: group-ffi/csharp (package.json, Runtime/) plus the native
# library under Plugins/<platform>/, a .meta file for every file and folder (Unity ignores assets without
# one in an immutable package, as a tarball package is), then checks it and packs
# com.groupserver.group-<version>.tgz for Package Manager's "Add package from tarball".
#
#   bash group-ffi/unity/build-package.sh [OUT_DIR]      (default: target/unity)
#
# GROUP_FFI_PROFILE=dev builds the library without optimisations (CI does, to save time); the default is
# release. Checks: package.json's version is the crate's; the Runtime folder compiles with Mono's mcs (C# 7)
# both as Unity compiles it (UNITY_5_3_OR_NEWER, against unity/UnityEngineStubs.cs) and as a plain Mono
# host does; every asset has a .meta with a unique GUID. Only Linux x86_64 is built here.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${1:-$repo/target/unity}
profile=${GROUP_FFI_PROFILE:-release}
source_dir=$repo/group-ffi/csharp
name=com.groupserver.group

say() { printf 'build-package: %s\n' "$*"; }
fail() { printf 'build-package: error: %s\n' "$*" >&2; exit 1; }

command -v mcs >/dev/null || fail "mcs (Mono's C# compiler) is needed: apt-get install mono-mcs"

crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
package_version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' "$source_dir/package.json")
[ -n "$crate_version" ] || fail "no version in Cargo.toml"
[ "$crate_version" = "$package_version" ] \
    || fail "package.json says version $package_version, the crate $crate_version: make them equal"

say "building libgroup_ffi ($profile)"
(cd "$repo" && cargo build --quiet --locked -p group-ffi --lib --profile "$profile")
target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
profile_dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
library=$target_dir/$profile_dir/libgroup_ffi.so
[ -f "$library" ] || fail "cargo built no $library"

package=$out/package
say "assembling $package"
rm -rf "$package"
mkdir -p "$package/Plugins/Linux/x86_64"
cp "$source_dir/package.json" "$source_dir/README.md" "$package/"
cp -R "$source_dir/Runtime" "$package/Runtime"
cp "$library" "$package/Plugins/Linux/x86_64/libgroup_ffi.so"

# A GUID that stays the same for the same path across builds (Unity keys references by GUID).
guid() { printf '%s/%s' "$name" "$1" | md5sum | cut -c1-32; }

importer_settings() {
    printf '  externalObjects: {}\n  userData: \n  assetBundleName: \n  assetBundleVariant: \n'
}

write_meta() {
    local path=$1 relative=${1#"$package"/}
    {
        printf 'fileFormatVersion: 2\nguid: %s\n' "$(guid "$relative")"
        if [ -d "$path" ]; then
            printf 'folderAsset: yes\nDefaultImporter:\n'
            importer_settings
        else
            case "$path" in
                *.cs)
                    printf 'MonoImporter:\n'
                    importer_settings
                    printf '  serializedVersion: 2\n  defaultReferences: []\n  executionOrder: 0\n'
                    printf '  icon: {instanceID: 0}\n'
                    ;;
                *.asmdef) printf 'AssemblyDefinitionImporter:\n'; importer_settings ;;
                */package.json) printf 'PackageManifestImporter:\n'; importer_settings ;;
                *.md | *.json) printf 'TextScriptImporter:\n'; importer_settings ;;
                *.so)
                    # Loaded by the Linux editor and Linux 64-bit players, nowhere else.
                    cat <<'PLUGIN'
PluginImporter:
  externalObjects: {}
  serializedVersion: 2
  iconMap: {}
  executionOrder: {}
  defineConstraints: []
  isPreloaded: 0
  isOverridable: 0
  isExplicitlyReferenced: 0
  validateReferences: 1
  platformData:
  - first:
      Any: 
    second:
      enabled: 0
      settings: {}
  - first:
      Editor: Editor
    second:
      enabled: 1
      settings:
        CPU: x86_64
        DefaultValueInitialized: true
        OS: Linux
  - first:
      Standalone: Linux64
    second:
      enabled: 1
      settings:
        CPU: x86_64
  userData: 
  assetBundleName: 
  assetBundleVariant: 
PLUGIN
                    ;;
                *) printf 'DefaultImporter:\n'; importer_settings ;;
            esac
        fi
    } >"$path.meta"
}

say "writing .meta files"
while IFS= read -r -d '' path; do
    write_meta "$path"
done < <(find "$package" -mindepth 1 ! -name '*.meta' -print0)

assets=$(find "$package" -mindepth 1 ! -name '*.meta' | wc -l)
metas=$(find "$package" -name '*.meta' | wc -l)
[ "$assets" -eq "$metas" ] || fail "$assets assets but $metas .meta files"
duplicates=$(find "$package" -name '*.meta' -exec sed -n 's/^guid: //p' {} + | sort | uniq -d)
[ -z "$duplicates" ] || fail "duplicate GUIDs: $duplicates"

say "compiling Runtime/ as Unity does (UNITY_5_3_OR_NEWER, UnityEngine stubs) and as a Mono host does"
mapfile -t runtime_sources < <(find "$package/Runtime" -name '*.cs' | sort)
mcs -nologo -unsafe -langversion:7 -warnaserror+ -target:library -define:UNITY_5_3_OR_NEWER \
    -out:"$out/Group.Runtime.Unity.dll" "${runtime_sources[@]}" "$repo/group-ffi/unity/UnityEngineStubs.cs"
mcs -nologo -unsafe -langversion:7 -warnaserror+ -target:library \
    -out:"$out/Group.Runtime.dll" "${runtime_sources[@]}"

tarball=$out/$name-$package_version.tgz
tar -czf "$tarball" -C "$out" package
say "ok: $tarball ($(du -h "$tarball" | cut -f1), $assets assets)"
