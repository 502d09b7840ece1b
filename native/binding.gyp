{
  "targets": [
    {
      "target_name": "nflb_native",
      "sources": ["nflb_native.c"],
      "cflags": ["-Wall", "-Wextra", "-std=gnu11"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
