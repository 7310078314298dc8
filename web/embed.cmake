# web/embed.cmake - turns the dashboard's files (web/dashboard/*) and the
# vendored modules (web/vendor/*) into one C source: each file's bytes and
# a table of {url path, bytes, length} that services/webassets.c serves.
#   cmake -DROOT=web -DOUT=dashboard_assets.c -P web/embed.cmake
# web/dashboard/F is served as /ui/F, web/vendor/F as /ui/vendor/F.
# Bytes are written as hex so no file needs escaping.
file(GLOB dash RELATIVE "${ROOT}" "${ROOT}/dashboard/*")
file(GLOB vend RELATIVE "${ROOT}" "${ROOT}/vendor/*")
list(SORT dash)
list(SORT vend)
set(body "/* Generated from web/dashboard and web/vendor by web/embed.cmake;\n"
         " * do not edit. */\n#include \"webassets.h\"\n\n")
set(table "")
set(i 0)
foreach(rel ${dash} ${vend})
  get_filename_component(name "${rel}" NAME)
  if(name STREQUAL "README" OR name STREQUAL "SHA256SUMS")
    continue()
  endif()
  file(READ "${ROOT}/${rel}" hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR n "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(REGEX REPLACE "((0x..,){16})" "\\1\n  " bytes "${bytes}")
  string(APPEND body "static const unsigned char f${i}[] = {\n  ${bytes}0x00};\n")
  string(REGEX REPLACE "^dashboard/" "" url "${rel}")
  string(APPEND table "  {\"/ui/${url}\", f${i}, ${n}},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE "${OUT}.tmp" "${body}\nconst sl_webasset sl_dashboard_assets[] = {\n"
  "${table}  {0, 0, 0}};\n")
# Only a changed source rewrites the output (no needless rebuilds).
configure_file("${OUT}.tmp" "${OUT}" COPYONLY)
file(REMOVE "${OUT}.tmp")
