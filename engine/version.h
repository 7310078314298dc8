/* version.h - the version of sluice (sluice --version, the build_info
 * metric, the migrations table). */
#ifndef SL_VERSION_H
#define SL_VERSION_H

#define SL_VERSION "0.5.0"

#endif
