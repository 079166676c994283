# CPack pre-build script (CPACK_PRE_BUILD_SCRIPTS, set in cmake/install.cmake): the staged install
# puts the configuration under the packaging prefix (<staging>/usr/etc/sluice/sluice.toml, as a
# `cmake --install --prefix /usr` would); Debian wants it in /etc, where the package's conffiles
# and systemd unit look. Moves <staging><prefix>/<sysconfdir> to <staging>/etc.
# A sysconfdir configured as an absolute path (-DCMAKE_INSTALL_SYSCONFDIR=/etc) is already there.

if(IS_ABSOLUTE "${CPACK_SLUICE_SYSCONFDIR}")
  return()
endif()
set(staging "${CPACK_TEMPORARY_INSTALL_DIRECTORY}")
if(CPACK_TEMPORARY_DIRECTORY AND NOT EXISTS "${staging}")
  set(staging "${CPACK_TEMPORARY_DIRECTORY}")
endif()
set(from "${staging}${CPACK_PACKAGING_INSTALL_PREFIX}/${CPACK_SLUICE_SYSCONFDIR}")
set(to "${staging}/etc")
if(NOT EXISTS "${from}" OR "${from}" STREQUAL "${to}")
  return()
endif()
file(MAKE_DIRECTORY "${to}")
file(GLOB entries RELATIVE "${from}" "${from}/*")
foreach(entry IN LISTS entries)
  if(EXISTS "${to}/${entry}")
    message(FATAL_ERROR "deb_sysconfdir: ${to}/${entry} exists already")
  endif()
  file(RENAME "${from}/${entry}" "${to}/${entry}")
endforeach()
file(REMOVE_RECURSE "${from}")
message(STATUS "deb_sysconfdir: moved ${CPACK_PACKAGING_INSTALL_PREFIX}/${CPACK_SLUICE_SYSCONFDIR} to /etc")
