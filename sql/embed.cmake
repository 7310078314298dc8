# sql/embed.cmake - turns a text file into a C source that defines it as a
# NUL-terminated string, so the binary carries sql/base.sql with it:
#   cmake -DIN=sql/base.sql -DOUT=base_sql.c -DNAME=sl_base_sql -P sql/embed.cmake
# Bytes are written as hex so no character of the file needs escaping.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
string(REGEX REPLACE "((0x..,){16})" "\\1\n  " bytes "${bytes}")
file(WRITE "${OUT}"
  "/* Generated from ${IN} by sql/embed.cmake; do not edit. */\n"
  "#include <stddef.h>\n"
  "extern const char ${NAME}[];\n"
  "const char ${NAME}[] = {\n  ${bytes}0x00};\n")
