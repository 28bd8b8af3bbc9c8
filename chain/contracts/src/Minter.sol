// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

import {ILivepeerToken} from "./Interfaces.sol";
import {Manager} from "./Manager.sol";

/// @title Minter
/// @notice Holds bonded LPT and all ETH (deposits, reserves, fees); mints each round's reward.
/// Inflation and bonding rates are in parts per billion (1e9), as Livepeer's Minter keeps them.
/// The supply is the token's totalSupply (no L2LPTDataCache on this local chain).
contract Minter is Manager {
    uint256 private constant PERC_DIVISOR_V2 = 1000000000;

    uint256 public inflation;
    uint256 public inflationChange;
    uint256 public targetBondingRate;
    uint256 public currentMintableTokens;
    uint256 public currentMintedTokens;

    event SetCurrentRewardTokens(uint256 currentMintableTokens, uint256 currentInflation);

    modifier onlyBondingManager() {
        require(msg.sender == _lookup("BondingManager"), "caller must be BondingManager");
        _;
    }

    modifier onlyRoundsManager() {
        require(msg.sender == _lookup("RoundsManager"), "caller must be RoundsManager");
        _;
    }

    constructor(
        address _controller,
        uint256 _inflation,
        uint256 _inflationChange,
        uint256 _targetBondingRate
    ) Manager(_controller) {
        require(_inflation <= PERC_DIVISOR_V2, "_inflation is invalid percentage");
        require(_inflationChange <= PERC_DIVISOR_V2, "_inflationChange is invalid percentage");
        require(_targetBondingRate <= PERC_DIVISOR_V2, "_targetBondingRate is invalid percentage");
        inflation = _inflation;
        inflationChange = _inflationChange;
        targetBondingRate = _targetBondingRate;
    }

    function setTargetBondingRate(uint256 _targetBondingRate) external onlyControllerOwner {
        require(_targetBondingRate <= PERC_DIVISOR_V2, "_targetBondingRate is invalid percentage");
        targetBondingRate = _targetBondingRate;
        emit ParameterUpdate("targetBondingRate");
    }

    function setInflationChange(uint256 _inflationChange) external onlyControllerOwner {
        require(_inflationChange <= PERC_DIVISOR_V2, "_inflationChange is invalid percentage");
        inflationChange = _inflationChange;
        emit ParameterUpdate("inflationChange");
    }

    function token() public view returns (ILivepeerToken) {
        return ILivepeerToken(_lookup("LivepeerToken"));
    }

    function getGlobalTotalSupply() public view returns (uint256) {
        return token().totalSupply();
    }

    /// @notice Mint fracNum/fracDenom of this round's mintable tokens to the Minter.
    function createReward(uint256 _fracNum, uint256 _fracDenom)
        external
        onlyBondingManager
        whenSystemNotPaused
        returns (uint256)
    {
        if (_fracDenom == 0) {
            return 0;
        }
        uint256 perc = (_fracNum * PERC_DIVISOR_V2) / _fracDenom;
        uint256 mintAmount = (currentMintableTokens * perc) / PERC_DIVISOR_V2;
        require(
            currentMintedTokens + mintAmount <= currentMintableTokens,
            "minted tokens cannot exceed mintable tokens"
        );
        currentMintedTokens += mintAmount;
        if (mintAmount > 0) {
            token().mint(address(this), mintAmount);
        }
        return mintAmount;
    }

    function trustedTransferTokens(address _to, uint256 _amount)
        external
        onlyBondingManager
        whenSystemNotPaused
    {
        require(token().transfer(_to, _amount), "token transfer failed");
    }

    function trustedWithdrawETH(address payable _to, uint256 _amount)
        external
        whenSystemNotPaused
    {
        require(
            msg.sender == _lookup("BondingManager") || msg.sender == _lookup("JobsManager"),
            "caller must be BondingManager or JobsManager"
        );
        (bool ok, ) = _to.call{value: _amount}("");
        require(ok, "ETH transfer failed");
    }

    function depositETH() external payable returns (bool) {
        require(
            msg.sender == address(this) || msg.sender == _lookup("JobsManager"),
            "caller must be Minter or JobsManager"
        );
        return true;
    }

    /// @notice Start of round: adjust inflation towards the target bonding rate, then set the
    /// round's mintable tokens.
    function setCurrentRewardTokens() external onlyRoundsManager whenSystemNotPaused {
        uint256 supply = getGlobalTotalSupply();
        uint256 bondingRate = 0;
        if (supply > 0) {
            bondingRate = (bondingManagerTotalBonded() * PERC_DIVISOR_V2) / supply;
        }
        if (bondingRate < targetBondingRate) {
            inflation += inflationChange;
        } else if (bondingRate > targetBondingRate) {
            inflation = inflationChange > inflation ? 0 : inflation - inflationChange;
        }
        currentMintableTokens = (supply * inflation) / PERC_DIVISOR_V2;
        currentMintedTokens = 0;
        emit SetCurrentRewardTokens(currentMintableTokens, inflation);
    }

    function bondingManagerTotalBonded() internal view returns (uint256) {
        return bondingManager().getTotalBonded();
    }
}
