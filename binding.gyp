{
  "targets": [
    {
      "target_name": "graphdriver",
      "sources": [
        "native/addon.cc",
        "native/common/args.cc",
        "native/common/failure.cc",
        "native/common/bounded-path.cc",
        "native/mount.cc",
        "native/loop.cc",
        "native/sparse.cc",
        "native/devmapper.cc",
        "native/btrfs.cc",
        "native/xattr.cc",
        "native/fsops.cc",
        "native/apply-entries.cc",
        "native/scan-tree.cc",
        "native/copy-tree.cc",
        "native/mount-api.cc",
        "native/quota.cc",
        "native/sha256.cc",
        "native/remove-tree.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")", "native"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE", "_FILE_OFFSET_BITS=64"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=gnu++20", "-fexceptions", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "type": "none" }]]
    }
  ]
}
