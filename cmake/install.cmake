# Installation: headers, libsluice (static by default, shared with -DBUILD_SHARED_LIBS=ON), the
# `sluice` binary, a CMake package (find_package(sluice CONFIG) -> sluice::sluice), a pkg-config
# file, the systemd unit and example configuration, and the Debian package (cpack -G DEB).
# Included from the top-level CMakeLists.txt only.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The shared library exports sluice's own symbols and nothing else (libpq, libcurl, date and
# nlohmann_json stay private), and keeps inline functions out of its dynamic symbol table.
if(BUILD_SHARED_LIBS)
  set_target_properties(sluice PROPERTIES VISIBILITY_INLINES_HIDDEN ON)
  target_link_options(sluice PRIVATE "LINKER:--version-script=${PROJECT_SOURCE_DIR}/cmake/libsluice.map")
  set_property(TARGET sluice APPEND PROPERTY LINK_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/libsluice.map)
endif()

install(TARGETS sluice EXPORT sluiceTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/sluice DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
        COMPONENT dev FILES_MATCHING PATTERN "*.hpp")
install(FILES ${PROJECT_BINARY_DIR}/generated/sluice/version.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/sluice COMPONENT dev)

set(SLUICE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/sluice)
install(EXPORT sluiceTargets NAMESPACE sluice:: DESTINATION ${SLUICE_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/sluiceConfig.cmake.in
  ${PROJECT_BINARY_DIR}/sluiceConfig.cmake INSTALL_DESTINATION ${SLUICE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/sluiceConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/sluiceConfig.cmake ${PROJECT_BINARY_DIR}/sluiceConfigVersion.cmake
        DESTINATION ${SLUICE_CMAKE_DIR} COMPONENT dev)

# pkg-config: a static libsluice needs its private dependencies on every link line, so they are
# public there; `pkg-config --static` would drag in libpq's own static dependencies, which
# Debian does not ship as static libraries.
if(BUILD_SHARED_LIBS)
  set(SLUICE_PC_REQUIRES "libpq")
  set(SLUICE_PC_REQUIRES_PRIVATE "libcurl")
  set(SLUICE_PC_LIBS "")
  set(SLUICE_PC_LIBS_PRIVATE "-ldate-tz")
else()
  set(SLUICE_PC_REQUIRES "libpq libcurl")
  set(SLUICE_PC_REQUIRES_PRIVATE "")
  set(SLUICE_PC_LIBS "-ldate-tz -pthread")
  set(SLUICE_PC_LIBS_PRIVATE "")
endif()
# The file finds its prefix relative to itself, so a staged (DESTDIR) install works too.
file(RELATIVE_PATH SLUICE_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
configure_file(${PROJECT_SOURCE_DIR}/cmake/sluice.pc.in ${PROJECT_BINARY_DIR}/sluice.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/sluice.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
        COMPONENT dev)

if(TARGET sluice_cli)
  install(TARGETS sluice_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
  if(EXISTS ${PROJECT_SOURCE_DIR}/packaging/sluice.service)
    install(FILES ${PROJECT_SOURCE_DIR}/packaging/sluice.service
            DESTINATION lib/systemd/system COMPONENT runtime)
  endif()
  install(FILES ${PROJECT_SOURCE_DIR}/examples/demo.toml DESTINATION ${CMAKE_INSTALL_DATADIR}/sluice/examples
          COMPONENT runtime)
  install(FILES ${PROJECT_SOURCE_DIR}/examples/incident.toml
          DESTINATION ${CMAKE_INSTALL_DATADIR}/sluice/examples COMPONENT runtime)
  # The service's configuration: <prefix>/etc/sluice/sluice.toml (CMAKE_INSTALL_SYSCONFDIR, a
  # relative path by default), so that `cmake --install --prefix X` writes nothing outside X.
  # The Debian package moves it to /etc/sluice (cmake/deb_sysconfdir.cmake, below), where
  # packaging/debian/conffiles and the systemd unit expect it. -DSLUICE_INSTALL_ETC=OFF leaves
  # it out.
  option(SLUICE_INSTALL_ETC "Install sluice.toml into CMAKE_INSTALL_SYSCONFDIR/sluice" ON)
  if(SLUICE_INSTALL_ETC)
    install(FILES ${PROJECT_SOURCE_DIR}/packaging/sluice.toml
            DESTINATION ${CMAKE_INSTALL_SYSCONFDIR}/sluice COMPONENT runtime)
  endif()
endif()

# Debian package: cpack -G DEB in the build folder. One package with the daemon, the library
# and its headers (a split into sluice / libsluice-dev is a later step).
set(CPACK_PACKAGE_NAME sluice)
set(CPACK_PACKAGE_VENDOR "sluice")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "PostgreSQL task scheduler and connection pool")
set(CPACK_PACKAGE_CONTACT "sluice maintainers <sluice@localhost>")
set(CPACK_DEBIAN_PACKAGE_SECTION database)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # runtime dependencies from dpkg-shlibdeps
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "postgresql (>= 13)")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/postinst ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
    ${PROJECT_SOURCE_DIR}/packaging/debian/postrm ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)  # the package ships stripped binaries
set(CPACK_GENERATOR DEB)
# The package installs under /usr (CPACK_PACKAGING_INSTALL_PREFIX) but its configuration belongs
# in /etc: after CPack's staged install, this script moves <staging>/usr/etc to <staging>/etc.
set(CPACK_SLUICE_SYSCONFDIR ${CMAKE_INSTALL_SYSCONFDIR})
set(CPACK_PRE_BUILD_SCRIPTS ${PROJECT_SOURCE_DIR}/cmake/deb_sysconfdir.cmake)
include(CPack)
